package home

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/quicproquo/qpq/mesh/identity"
)

// The nodes file holds one "ADDR FINGERPRINT" line per node the user
// trusted (named with --node and trusted on first use, or confirmed after
// an mDNS sighting), the most recently remembered last: RememberNode and
// KnownNode (home.go) write and read it, and so do older binaries.

// Node is a remembered (trusted) node.
type Node struct {
	Addr        string
	Fingerprint identity.Fingerprint
}

// Nodes returns the remembered nodes, the most recently remembered first
// (never nil). A missing file is no nodes.
func (h Home) Nodes() ([]Node, error) {
	b, err := h.read(NodesFile)
	if errors.Is(err, os.ErrNotExist) {
		return []Node{}, nil
	}
	if err != nil {
		return nil, err
	}
	ns := parseNodes(string(b))
	out := make([]Node, 0, len(ns))
	for i := len(ns) - 1; i >= 0; i-- {
		out = append(out, ns[i])
	}
	return out, nil
}

// parseNodes reads the file in its order, skipping malformed lines and
// keeping the last line of an address; of a file written before the
// MaxNodes bound, only the MaxNodes most recent count.
func parseNodes(text string) []Node {
	var all []Node
	last := map[string]int{}                         // address -> index of its last line in all
	for _, line := range strings.Split(text, "\n") { // no line limit: see KnownNode
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		fp, err := identity.ParseFingerprint(f[1])
		if err != nil {
			continue
		}
		last[f[0]] = len(all)
		all = append(all, Node{Addr: f[0], Fingerprint: fp})
	}
	var ns []Node
	for i, n := range all {
		if last[n.Addr] == i {
			ns = append(ns, n)
		}
	}
	if len(ns) > MaxNodes {
		ns = ns[len(ns)-MaxNodes:]
	}
	return ns
}

// TrustsNode reports whether the node key fp is remembered at any
// address (a trusted node found by mDNS at a new address stays trusted:
// its key proves it).
func (h Home) TrustsNode(fp identity.Fingerprint) bool {
	ns, err := h.Nodes()
	if err != nil {
		return false
	}
	for _, n := range ns {
		if n.Fingerprint == fp {
			return true
		}
	}
	return false
}

// ForgetNode removes a node address; an unknown one is no error.
func (h Home) ForgetNode(addr string) error {
	return h.editNodes(func(ns []Node) []Node { return ns }, addr)
}

// editNodes rewrites the file without addr, after f.
func (h Home) editNodes(f func([]Node) []Node, addr string) error {
	b, err := h.read(NodesFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var keep []Node
	for _, n := range parseNodes(string(b)) {
		if n.Addr != addr {
			keep = append(keep, n)
		}
	}
	keep = f(keep)
	var out strings.Builder
	for _, n := range keep {
		fmt.Fprintf(&out, "%s %s\n", n.Addr, n.Fingerprint)
	}
	return h.write(NodesFile, []byte(out.String()))
}
