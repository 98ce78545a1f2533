package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
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
	waitFor(t, 15*time.Second, "node control socket in "+ns, func() bool {
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
	waitFor(t, 60*time.Second, "every node to link to the other three with no --peer", func() bool {
		for _, p := range ps {
			st, err := p.status()
			if err != nil || len(st.Peers) != 3 {
				return false
			}
		}
		return true
	})
	viaMDNS := 0
	for _, p := range ps {
		for _, peer := range p.mustStatus().Peers {
			if peer.Via == "mdns" {
				viaMDNS++
			}
			if !strings.HasPrefix(peer.Addr, "10.78.0.") {
				t.Fatalf("peer address %s outside the test's namespaces", peer.Addr)
			}
		}
	}
	// Each of the 6 links was dialled by one side after an mDNS sighting.
	if viaMDNS < 6 {
		t.Fatalf("%d link ends say via mdns, want at least 6", viaMDNS)
	}
}
