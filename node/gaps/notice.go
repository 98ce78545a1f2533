package gaps

import (
	"fmt"
	"strings"
)

// Text words the notice for a person, name standing for the sender (the
// caller's contact name, already made safe to display):
//
//	1 message from alice not yet arrived
//	2 messages from alice not yet arrived, 1 missing
//	1 message from alice missing
//	a late message from alice arrived; 1 not yet arrived
//	alice's messages are numbered anew (a reinstall or another device); 2 skipped messages no longer tracked
func (n Notice) Text(name string) string {
	switch n.Kind {
	case KindPending:
		return summary(name, n.Pending, n.Missing)
	case KindMissing:
		var b strings.Builder
		fmt.Fprintf(&b, "%s from %s missing", messages(n.Missing), name)
		if n.Pending > 0 {
			fmt.Fprintf(&b, ", %d not yet arrived", n.Pending)
		}
		return b.String()
	case KindArrived:
		s := "a late message from " + name + " arrived"
		if n.Pending > 0 || n.Missing > 0 {
			s += "; " + rest(n.Pending, n.Missing)
		}
		return s
	case KindRestarted:
		s := name + "'s messages are numbered anew (a reinstall or another device)"
		if n.Count > 0 {
			s += "; " + strings.Replace(messages(n.Count), " ", " skipped ", 1) + " no longer tracked"
		}
		return s
	}
	return fmt.Sprintf("message numbering from %s: unknown change", name)
}

// summary is "N message(s) from NAME not yet arrived[, M missing]".
func summary(name string, pending, missing uint64) string {
	if pending == 0 {
		return fmt.Sprintf("%s from %s missing", messages(missing), name)
	}
	s := fmt.Sprintf("%s from %s not yet arrived", messages(pending), name)
	if missing > 0 {
		s += fmt.Sprintf(", %d missing", missing)
	}
	return s
}

// rest is "N not yet arrived, M missing", leaving out zero counts.
func rest(pending, missing uint64) string {
	var parts []string
	if pending > 0 {
		parts = append(parts, fmt.Sprintf("%d not yet arrived", pending))
	}
	if missing > 0 {
		parts = append(parts, fmt.Sprintf("%d missing", missing))
	}
	return strings.Join(parts, ", ")
}

func messages(n uint64) string {
	if n == 1 {
		return "1 message"
	}
	return fmt.Sprintf("%d messages", n)
}
