package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// addLateNS makes namespace i for a node whose eth0 is not usable yet:
// with absent, eth0 does not exist; otherwise it exists with its address
// but is down. plugLate then brings it into service.
func (r *netnsRig) addLateNS(i int, absent bool) string {
	ns := fmt.Sprintf("%sn%d", r.prefix, i)
	r.ip("netns", "add", ns)
	r.nodes = append(r.nodes, ns)
	r.ip("-n", ns, "link", "set", "lo", "up")
	if !absent {
		r.addVeth(i, ns)
		r.ip("-n", ns, "addr", "add", fmt.Sprintf("10.78.0.%d/24", i), "dev", "eth0")
	}
	return ns
}

func (r *netnsRig) addVeth(i int, ns string) {
	veth := fmt.Sprintf("qv%d", i)
	r.ip("-n", r.prefix+"br", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
	r.ip("-n", r.prefix+"br", "link", "set", veth, "master", "br0", "up")
}

func (r *netnsRig) plugLate(i int, ns string, absent bool) {
	if absent {
		r.addVeth(i, ns)
		r.ip("-n", ns, "addr", "add", fmt.Sprintf("10.78.0.%d/24", i), "dev", "eth0")
	}
	r.ip("-n", ns, "link", "set", "eth0", "up")
	// The kernel refuses a route through a link that is down.
	r.ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
}

// TestNetnsLateInterface starts a node whose only interface is down or
// not there yet, beside two running nodes: it must stay alone until the
// interface comes up, then find and link to both by mDNS, with no restart
// and no --peer.
func TestNetnsLateInterface(t *testing.T) {
	for _, tc := range []struct {
		name   string
		absent bool
	}{{"down", false}, {"absent", true}} {
		t.Run(tc.name, func(t *testing.T) {
			r := needNetns(t)
			var ps []*proc
			for i := 1; i <= 2; i++ {
				ps = append(ps, startNodeIn(t, r.addNode(i), fmt.Sprintf("10.78.0.%d:7443", i)))
			}
			fp1, fp2 := ps[0].fp(), ps[1].fp()
			testkit.WaitForEvery(t, 60*time.Second, procPoll, "the two running nodes to link", func() bool {
				return ps[0].linkedTo(fp2) && ps[1].linkedTo(fp1)
			})

			// A wildcard listen address: the node cannot name an
			// address that does not exist yet.
			ns := r.addLateNS(3, tc.absent)
			late := startNodeIn(t, ns, "0.0.0.0:7443")
			fp3 := late.fp()
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
				if st := late.mustStatus(); len(st.Peers) != 0 {
					t.Fatalf("the node linked with its interface %s: %+v", tc.name, st.Peers)
				}
			}

			r.plugLate(3, ns, tc.absent)
			up := time.Now()
			testkit.WaitForEvery(t, 60*time.Second, procPoll, "the late node to link to both neighbours", func() bool {
				return late.linkedTo(fp1) && late.linkedTo(fp2)
			})
			t.Logf("linked to both neighbours %v after the interface came up", time.Since(up).Round(100*time.Millisecond))
			// The late node knows no one but by mDNS, so its first link
			// was dialled after an mDNS sighting by one end or the other.
			// The second may come from peer exchange instead: once the
			// late node links to one neighbour, its descriptor reaches the
			// other, which can dial it before its own mDNS sees it.
			viaMDNS := 0
			for _, n := range ps {
				fp := n.fp()
				ends := map[string]bool{}
				for _, pair := range []struct {
					p  *proc
					fp string
				}{{late, fp}, {n, fp3}} {
					for _, peer := range pair.p.mustStatus().Peers {
						if peer.Fingerprint != pair.fp {
							continue
						}
						ends[peer.Via] = true
						if !strings.HasPrefix(peer.Addr, "10.78.0.") {
							t.Fatalf("peer address %s outside the test's namespaces", peer.Addr)
						}
					}
				}
				if ends["static"] || !(ends["mdns"] || ends["exchange"]) {
					t.Fatalf("the link between the late node and %s has ends %v; want one dialled after mDNS or peer exchange", fp, ends)
				}
				if ends["mdns"] {
					viaMDNS++
				}
			}
			if viaMDNS == 0 {
				t.Fatal("neither of the late node's links was dialled after an mDNS sighting")
			}
		})
	}
}
