package display

import (
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Indent starts every line of a message after its header, so no text a
// sender chose can begin a line the way a header does.
const Indent = "    "

// NotContact is shown after the short code of a sender who is not one of
// the user's contacts.
const NotContact = "(not a contact)"

// TimeLayout is how a message's send time is shown (local time).
const TimeLayout = "2006-01-02 15:04"

// minBodyColumns: when fewer columns than this are left after the header,
// the body starts on the next line.
const minBodyColumns = 20

// Message is one received message as the user sees it.
type Message struct {
	SentAt    time.Time // the sender's clock
	Channel   string    // local channel name; "" for a direct message
	From      string    // contact name; "" when the sender is not a contact
	FromShort string    // short code of the sender's fingerprint
	Body      string    // exactly as received
}

// Layout says how messages are laid out. The zero value does not wrap
// and shows times in time.Local.
type Layout struct {
	// Width is the terminal's width in columns; lines are wrapped to it
	// so the terminal never wraps a sender's text to column 0. 0: no
	// wrapping (output to a pipe or file).
	Width int
	// Location for send times; nil is time.Local.
	Location *time.Location
}

// Header is the first line of a message without its body: time, channel,
// sender. Senders who are not contacts are shown by short code and
// marked NotContact.
func (l Layout) Header(m Message) string {
	loc := l.Location
	if loc == nil {
		loc = time.Local
	}
	var b strings.Builder
	b.WriteString(m.SentAt.In(loc).Format(TimeLayout))
	b.WriteString("  ")
	if m.Channel != "" {
		b.WriteByte('#')
		escapeTo(&b, m.Channel)
		b.WriteByte(' ')
	}
	if m.From != "" {
		escapeTo(&b, m.From)
	} else {
		escapeTo(&b, m.FromShort)
		b.WriteByte(' ')
		b.WriteString(NotContact)
	}
	b.WriteByte(':')
	return b.String()
}

// Format returns the message as one block ending in a newline: the
// header, the body's first line beside it, every further line (the
// body's own lines and wrapped pieces) indented by Indent. Everything
// the sender chose is escaped.
func (l Layout) Format(m Message) string {
	var out strings.Builder
	head := l.Header(m)
	out.WriteString(head)
	body := strings.ReplaceAll(m.Body, "\r\n", "\n")
	body = strings.TrimRight(body, "\n")
	lines := strings.Split(body, "\n")
	for i, line := range lines {
		text := Escape(line)
		avail := 0 // columns for this line's pieces; 0: unbounded
		if l.Width > 0 {
			avail = l.Width - Width(Indent)
			if avail < 1 {
				avail = 1
			}
		}
		if i == 0 {
			headAvail := 0
			if l.Width > 0 {
				headAvail = l.Width - Width(head) - 1
			}
			if l.Width == 0 || headAvail >= minBodyColumns || text == "" {
				piece, rest := cut(text, headAvail)
				if piece != "" {
					out.WriteByte(' ')
					out.WriteString(piece)
				}
				text = rest
				if text == "" {
					continue
				}
			}
		}
		for {
			piece, rest := cut(text, avail)
			out.WriteByte('\n')
			out.WriteString(Indent)
			out.WriteString(piece)
			text = rest
			if text == "" {
				break
			}
		}
	}
	out.WriteByte('\n')
	return out.String()
}

// cut splits s after at most cols columns, at a space in the second half
// of the piece when there is one; cols 0 takes all of s.
func cut(s string, cols int) (piece, rest string) {
	if cols <= 0 || Width(s) <= cols {
		return s, ""
	}
	w, end, space := 0, 0, -1
	for i, r := range s {
		rw := runeWidth(r)
		if w+rw > cols {
			break
		}
		w += rw
		end = i + utf8.RuneLen(r)
		if r == ' ' && w > cols/2 {
			space = end
		}
	}
	if end == 0 { // one rune wider than cols: take it anyway
		_, n := utf8.DecodeRuneInString(s)
		end = n
	}
	if space > 0 && end < len(s) {
		end = space
	}
	return s[:end], s[end:]
}

// Width is the number of terminal columns s takes (East Asian wide and
// emoji runes count two, combining marks none); s should be escaped.
func Width(s string) int {
	w := 0
	for _, r := range s {
		w += runeWidth(r)
	}
	return w
}

func runeWidth(r rune) int {
	switch {
	case unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r) || r == 0x200c || r == 0x200d:
		return 0
	case r >= 0x1100 && r <= 0x115f, r >= 0x2e80 && r <= 0xa4cf, r >= 0xac00 && r <= 0xd7a3,
		r >= 0xf900 && r <= 0xfaff, r >= 0xfe30 && r <= 0xfe4f, r >= 0xff00 && r <= 0xff60,
		r >= 0xffe0 && r <= 0xffe6, r >= 0x1f300 && r <= 0x1faff, r >= 0x20000 && r <= 0x3fffd:
		return 2
	}
	return 1
}
