package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// Namespace tests run real nodes with real mDNS multicast, inside network
// namespaces this test creates and deletes (DESIGN, "Running nodes on this
// machine"): the host's own interfaces never carry any of it.

// netnsRig is a bridge namespace and node namespaces joined by veth pairs.
type netnsRig struct {
	t      *testing.T
	prefix string
	nodes  []string
}

func needNetns(t *testing.T) *netnsRig {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root to create network namespaces"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "needs the ip command (iproute2)"
	}
	if why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("namespace test %s; CI must provide it", why)
		}
		t.Skipf("skipping: %s", why)
	}
	r := &netnsRig{t: t, prefix: fmt.Sprintf("qpqn%d", os.Getpid()%100000)}
	r.ip("netns", "add", r.prefix+"br")
	t.Cleanup(r.cleanup)
	r.ip("-n", r.prefix+"br", "link", "add", "br0", "type", "bridge")
	r.ip("-n", r.prefix+"br", "link", "set", "br0", "up")
	return r
}

func (r *netnsRig) ip(args ...string) {
	r.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		r.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// addNode makes namespace i with eth0 = 10.78.0.i/24 on the bridge.
func (r *netnsRig) addNode(i int) string {
	ns := fmt.Sprintf("%sn%d", r.prefix, i)
	r.ip("netns", "add", ns)
	r.nodes = append(r.nodes, ns)
	veth := fmt.Sprintf("qv%d", i)
	r.ip("-n", r.prefix+"br", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
	r.ip("-n", r.prefix+"br", "link", "set", veth, "master", "br0", "up")
	r.ip("-n", ns, "addr", "add", fmt.Sprintf("10.78.0.%d/24", i), "dev", "eth0")
	r.ip("-n", ns, "link", "set", "lo", "up")
	r.ip("-n", ns, "link", "set", "eth0", "up")
	r.ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
	return ns
}

func (r *netnsRig) cleanup() {
	for _, ns := range append(r.nodes, r.prefix+"br") {
		exec.Command("ip", "netns", "del", ns).Run()
	}
}

// startNodeIn runs `qpq node` inside a namespace with mDNS on.
func startNodeIn(t *testing.T, ns, listen string, args ...string) *proc {
	t.Helper()
	data := t.TempDir()
	p := startProc(t, data, append([]string{"netns", "exec", ns, qpqBin, "node", "--data", data, "--listen", listen, "--mdns-iface", "^eth0$"}, args...)...)
	p.ns = ns
	testkit.WaitForEvery(t, 15*time.Second, procPoll, "node control socket in "+ns, func() bool {
		_, err := p.status()
		return err == nil
	})
	return p
}

func TestNetnsNodesFindEachOtherByMDNS(t *testing.T) {
	r := needNetns(t)
	var ps []*proc
	for i := 1; i <= 4; i++ {
		ns := r.addNode(i)
		ps = append(ps, startNodeIn(t, ns, fmt.Sprintf("10.78.0.%d:7443", i)))
	}
	testkit.WaitForEvery(t, 60*time.Second, procPoll, "every node to link to the other three with no --peer", func() bool {
		for _, p := range ps {
			st, err := p.status()
			if err != nil || len(st.Peers) != 3 {
				return false
			}
		}
		return true
	})
	via := map[string]int{}
	for _, p := range ps {
		for _, peer := range p.mustStatus().Peers {
			via[peer.Via]++
			if !strings.HasPrefix(peer.Addr, "10.78.0.") {
				t.Fatalf("peer address %s outside the test's namespaces", peer.Addr)
			}
		}
	}
	// Each of the 6 links was dialled by one side after an mDNS sighting,
	// or after a descriptor learnt over a link that mDNS made first.
	if via["mdns"] == 0 || via["mdns"]+via["exchange"] < 6 || via["static"] != 0 {
		t.Fatalf("link ends by origin %v; want 6 dialled after mDNS or exchange, the first by mDNS", via)
	}

	// A channel message sent at node 1 reaches a member at every node.
	alice := newUser(t)
	code, share, e := runQPQ(t, userEnv, "channel", "new", "segment", "--home", alice.home)
	if code != 0 {
		t.Fatalf("channel new: %s", e)
	}
	var members []user
	for range ps[1:] {
		m := newUser(t)
		if code, _, e := runQPQ(t, userEnv, "channel", "join", strings.TrimSpace(share), "--home", m.home); code != 0 {
			t.Fatalf("channel join: %s", e)
		}
		members = append(members, m)
	}
	code, idOut, e := runQPQIn(t, ps[0].ns, userEnv, "send", "--home", alice.home, "--node", ps[0].peerArg(), "--channel", "segment", "--text", "meeting at the water tower")
	if code != 0 {
		t.Fatalf("send --channel: %s", e)
	}
	for i, m := range members {
		node := ps[i+1]
		testkit.WaitForEvery(t, 20*time.Second, procPoll, "the channel message to reach every node", func() bool { return node.kind("broadcast") == 1 })
		msgs := recvAll(t, m, node)
		if len(msgs) != 1 || msgs[0].Channel != "segment" || msgs[0].ID != strings.TrimSpace(idOut) || msgs[0].Text != "meeting at the water tower" {
			t.Fatalf("member at node %d got %+v", i+2, msgs)
		}
	}
}

// addBridge makes a second bridge namespace; addIface joins namespace ns
// to it as ifname with addr.
func (r *netnsRig) addBridge(name string) string {
	ns := r.prefix + name
	r.ip("netns", "add", ns)
	r.nodes = append(r.nodes, ns)
	r.ip("-n", ns, "link", "add", "br0", "type", "bridge")
	r.ip("-n", ns, "link", "set", "br0", "up")
	return ns
}

func (r *netnsRig) addIface(bridge, ns, veth, ifname, addr string) {
	r.ip("-n", bridge, "link", "add", veth, "type", "veth", "peer", "name", ifname, "netns", ns)
	r.ip("-n", bridge, "link", "set", veth, "master", "br0", "up")
	r.ip("-n", ns, "addr", "add", addr, "dev", ifname)
	r.ip("-n", ns, "link", "set", ifname, "up")
}

func TestNetnsFifthNodeBehindOneFoundByExchangeGetsADM(t *testing.T) {
	r := needNetns(t)
	var ps []*proc
	for i := 1; i <= 4; i++ {
		ns := r.addNode(i)
		listen := fmt.Sprintf("10.78.0.%d:7443", i)
		if i == 4 {
			listen = "0.0.0.0:7443" // node 4 also serves the second segment
		}
		ps = append(ps, startNodeIn(t, ns, listen))
	}
	// Node 5 sits on a second segment that only node 4 also joins; node 4
	// routes between them. mDNS does not cross; peer exchange does.
	br2 := r.addBridge("br2")
	n4 := r.prefix + "n4"
	r.addIface(br2, n4, "qw4", "eth1", "10.79.0.4/24")
	if out, err := exec.Command("ip", "netns", "exec", n4, "sysctl", "-qw", "net.ipv4.ip_forward=1").CombinedOutput(); err != nil {
		t.Fatalf("enable forwarding: %v %s", err, out)
	}
	n5 := r.prefix + "n5"
	r.ip("netns", "add", n5)
	r.nodes = append(r.nodes, n5)
	r.addIface(br2, n5, "qw5", "eth0", "10.79.0.5/24")
	r.ip("-n", n5, "link", "set", "lo", "up")
	r.ip("-n", n5, "route", "add", "224.0.0.0/4", "dev", "eth0")
	r.ip("-n", n5, "route", "add", "10.78.0.0/24", "via", "10.79.0.4")
	for i := 1; i <= 3; i++ {
		r.ip("-n", fmt.Sprintf("%sn%d", r.prefix, i), "route", "add", "10.79.0.0/24", "via", "10.78.0.4")
	}
	// Node 4 needs mDNS on both of its interfaces.
	ps[3].cmd.Process.Kill()
	<-ps[3].done
	ps[3] = startNodeIn(t, n4, "0.0.0.0:7443", "--mdns-iface", "^eth1$")
	p5 := startNodeIn(t, n5, "10.79.0.5:7443")
	fp5 := p5.fp()
	testkit.WaitForEvery(t, 90*time.Second, procPoll, "node 1 to link to node 5 by peer exchange", func() bool { return ps[0].linkedTo(fp5) })
	// Whichever of the two dialled, it did so from an exchanged descriptor:
	// mDNS cannot cross between the segments.
	fp1 := ps[0].fp()
	ends := map[string]bool{}
	for _, pair := range []struct {
		p  *proc
		fp string
	}{{ps[0], fp5}, {p5, fp1}} {
		for _, peer := range pair.p.mustStatus().Peers {
			if peer.Fingerprint == pair.fp {
				ends[peer.Via] = true
			}
		}
	}
	if !ends["exchange"] || ends["mdns"] || ends["static"] {
		t.Fatalf("the node 1 - node 5 link ends say %v; want one via exchange", ends)
	}

	// A DM from a user at node 1 reaches a user at node 5.
	alice, bob := newUser(t), newUser(t)
	recvAll(t, bob, p5)
	id := sendWhenKnown(t, alice, ps[0], bob, "across two segments")
	testkit.WaitForEvery(t, 30*time.Second, procPoll, "the DM to reach node 5", func() bool { return p5.kind("dm") == 1 })
	msgs := recvAll(t, bob, p5)
	if len(msgs) != 1 || msgs[0].ID != id || msgs[0].Text != "across two segments" {
		t.Fatalf("bob at node 5 got %+v", msgs)
	}
}
