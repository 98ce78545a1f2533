package main

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// healthDelay is how much farther the slow node of the namespace test
// looks: each of its health answers waits this long (the node's
// QPQ_TEST_HEALTH_DELAY hook; this kernel has no sch_netem).
const healthDelay = 40 * time.Millisecond

// startNodeInDelayed is startNodeIn with the node's health answers
// delayed by d (0: none).
func startNodeInDelayed(t *testing.T, ns, listen string, d time.Duration) *proc {
	t.Helper()
	data := t.TempDir()
	args := []string{"netns", "exec", ns, "env"}
	if d > 0 {
		args = append(args, "QPQ_TEST_HEALTH_DELAY="+d.String())
	}
	args = append(args, qpqBin, "node", "--data", data, "--listen", listen, "--mdns-iface", "^eth0$")
	p := startProc(t, data, args...)
	p.ns = ns
	testkit.WaitForEvery(t, 15*time.Second, procPoll, "node control socket in "+ns, func() bool {
		_, err := p.status()
		return err == nil
	})
	return p
}

// rttOn returns the round trip shown on the line of screen that names
// addr (the last such line), or false.
func rttOn(screen, addr string) (time.Duration, bool) {
	re := regexp.MustCompile(`(\d+(?:\.\d+)?)(µs|us|ms|s)\b`)
	ls := linesWith(screen, addr)
	if len(ls) == 0 {
		return 0, false
	}
	m := re.FindStringSubmatch(ls[len(ls)-1])
	if m == nil {
		return 0, false
	}
	d, err := time.ParseDuration(m[1] + strings.Replace(m[2], "us", "µs", 1))
	return d, err == nil
}

// On a link the test creates, two nodes announce themselves by mDNS: S at
// 10.78.0.1, whose health answers wait 40 ms, and F at 10.78.0.2. Alice's
// chat, on a third machine of the link and given no node, finds them and
// authenticates to neither (her bundle reaches no node), telling her how
// to confirm one (/mesh server ADDR#FP). Bob on the same machine trusts
// both: his chat with no node uses F, the lower RTT, although S is found
// at the lower address. Then alice's /mesh peers lists both with their
// RTTs, /mesh auto picks F and still waits for her to confirm its key,
// and /mesh server F#FP makes the chat authenticate there.
func TestChatNetnsFindsNodesByMDNSAndAutoPicksTheLowerRTT(t *testing.T) {
	r := needNetns(t)
	slowAddr, fastAddr := "10.78.0.1:7443", "10.78.0.2:7443"
	slow := startNodeInDelayed(t, r.addNode(1), slowAddr, healthDelay)
	fast := startNodeInDelayed(t, r.addNode(2), fastAddr, 0)
	laptop := r.addNode(3) // alice's machine: no node of its own
	slowFP, fastFP := slow.fp(), fast.fp()
	alice := newUser(t)
	bundles := func() (int, int) { return slow.kind("bundle"), fast.kind("bundle") }

	c := startChatTerm(t, laptop, nil, "--home", alice.home)
	// Found by mDNS, shown, and not used: nobody confirmed either key.
	c.waitFor(20*time.Second, "the chat to show both nodes found by mDNS", func(h string) bool {
		return strings.Contains(h, slowAddr) && strings.Contains(h, fastAddr)
	})
	c.waitText(20*time.Second, "/mesh server")
	c.alive()
	if s, f := bundles(); s != 0 || f != 0 {
		t.Fatalf("alice's bundle reached the nodes (%d at S, %d at F) before she confirmed one: the chat authenticated to a never-seen node", s, f)
	}

	// Bob on the same laptop trusts both (he used each with --node
	// ADDR#FP): his chat with no node uses the lower RTT by itself, F,
	// although S is found at the lower address.
	bob := newUser(t)
	for _, p := range []*proc{slow, fast} {
		if code, _, e := runQPQIn(t, laptop, userEnv, "recv", "--home", bob.home, "--node", p.peerArg()); code != 0 {
			t.Fatalf("bob's recv at %s: %s", p.addr(), e)
		}
	}
	cb := startChatTerm(t, laptop, nil, "--home", bob.home)
	cb.waitFor(30*time.Second, "bob's chat to connect to a trusted node found by mDNS", func(h string) bool {
		return len(linesWith(h, "): connected")) > 0
	})
	cb.typeLine("/status")
	h := cb.waitFor(10*time.Second, "/status to name the node", func(h string) bool {
		i := strings.LastIndex(h, "/status")
		return i >= 0 && (strings.Contains(h[i+7:], fastAddr) || strings.Contains(h[i+7:], slowAddr))
	})
	if l := linesWith(h, "): connected"); !strings.Contains(l[len(l)-1], fastAddr) {
		t.Errorf("with both nodes trusted bob's chat chose %q, not F (the lower RTT):\n%s", l[len(l)-1], h)
	}
	cb.alive()
	// Bob's bundle is at both nodes now (published by his recv and chat,
	// flooded between them); what counts from here is alice's.
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "bob's bundle at both nodes", func() bool {
		s, f := bundles()
		return s >= 1 && f >= 1
	})
	time.Sleep(time.Second) // let bob's republishing settle
	baseS, baseF := bundles()

	// /mesh peers: both, with key and RTT.
	c.typeLine("/mesh peers")
	h = c.waitFor(10*time.Second, "/mesh peers to list both nodes with RTTs", func(h string) bool {
		i := strings.LastIndex(h, "/mesh peers")
		if i < 0 {
			return false
		}
		tail := h[i:]
		_, okS := rttOn(tail, slowAddr)
		_, okF := rttOn(tail, fastAddr)
		return okS && okF
	})
	tail := h[strings.LastIndex(h, "/mesh peers"):]
	rs, _ := rttOn(tail, slowAddr)
	rf, _ := rttOn(tail, fastAddr)
	if rs < healthDelay || rf >= rs {
		t.Fatalf("/mesh peers: S %v, F %v; want S at least %v and F lower:\n%s", rs, rf, healthDelay, tail)
	}
	for addr, fp := range map[string]string{slowAddr: slowFP, fastAddr: fastFP} {
		if l := linesWith(tail, addr); len(l) == 0 || !strings.Contains(strings.Join(l, "\n"), fp[:4]) {
			t.Errorf("/mesh peers does not show %s with its key %s:\n%s", addr, fp[:8], tail)
		}
	}

	// /mesh auto picks F and asks for its key before using it.
	c.typeLine("/mesh auto")
	h = c.waitFor(20*time.Second, "/mesh auto to name the node it picked", func(h string) bool {
		i := strings.LastIndex(h, "/mesh auto")
		return i >= 0 && strings.Contains(h[i+len("/mesh auto"):], fastAddr)
	})
	if tail := h[strings.LastIndex(h, "/mesh auto"):]; strings.Contains(tail, slowAddr) && !strings.Contains(tail, fastAddr) {
		t.Fatalf("/mesh auto picked S:\n%s", tail)
	}
	if s, f := bundles(); s != baseS || f != baseF {
		t.Fatalf("after /mesh auto the nodes hold %d (S) and %d (F) bundles, %d and %d before: a never-seen node was used without its key being confirmed", s, f, baseS, baseF)
	}

	// Naming F's key confirms it: the chat authenticates there.
	c.typeLine("/mesh server " + fastAddr + "#" + fastFP)
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "alice's bundle to reach F once she confirmed it", func() bool { return fast.kind("bundle") > baseF })
	c.waitText(10*time.Second, "connected")
	// And S, so that both are trusted.
	c.typeLine("/mesh server " + slowAddr + "#" + slowFP)
	c.waitFor(20*time.Second, "the chat to switch to S", func(h string) bool {
		i := strings.LastIndex(h, "/mesh server "+slowAddr)
		return i >= 0 && len(linesWith(h[i:], "connected")) > 0
	})
	c.alive()
}
