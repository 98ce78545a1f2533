package main

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"

	"github.com/quicproquo/qpq/mesh/testkit"
)

const loop = "127.0.0.1:0"

func TestTwoNodesOnePeerFlagBothListEachOther(t *testing.T) {
	a := startNode(t, "", "--listen", loop)
	b := startNode(t, "", "--listen", loop, "--peer", a.peerArg(), "--decoy-rate", "5", "--loop-rate", "1")
	afp, bfp := a.fp(), b.fp()
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "both nodes to list the link", func() bool {
		return a.linkedTo(bfp) && b.linkedTo(afp)
	})
	st := b.mustStatus()
	if len(st.Peers) != 1 || st.Peers[0].Addr != a.addr() || st.Peers[0].Direction != "outbound" {
		t.Fatalf("b's peers: %+v", st.Peers)
	}
	if st := a.mustStatus(); len(st.Peers) != 1 || st.Peers[0].Direction != "inbound" || st.Peers[0].RTTMs <= 0 {
		t.Fatalf("a's peers: %+v", st.Peers)
	}
	// The text form shows the same.
	_, out, _ := runQPQ(t, nil, "status", "--data", a.data)
	if !strings.Contains(out, bfp) || !strings.Contains(out, "peers        1") || !strings.Contains(out, "handshakes   0 in progress") || !strings.Contains(out, "placement    off (every DM floods)") || !strings.Contains(out, "onion        relaying, key epoch") {
		t.Fatalf("qpq status text:\n%s", out)
	}
	if !strings.Contains(out, "cells        decoys off, 1 links") {
		t.Fatalf("a's status text, decoys off:\n%s", out)
	}
	// b sends cover on its link (--decoy-rate), and loops (--loop-rate).
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "b to send cover cells", func() bool { return b.mustStatus().Cells.SentCover > 0 })
	_, out, _ = runQPQ(t, nil, "status", "--data", b.data)
	if !strings.Contains(out, "cells        decoys 5 cells/s per link, 1 links") || !strings.Contains(out, "loops        1 a second round 3 relays") {
		t.Fatalf("b's status text, decoys and loops on:\n%s", out)
	}
	// a has decoys off, so the link's messages stay off b's cells.
	if strings.Contains(out, "\nstream ") || b.mustStatus().Cells.Streamed != 0 {
		t.Fatalf("b streams messages in cells to a node with decoys off:\n%s", out)
	}
	if st := b.mustStatus(); st.Peers[0].BytesSent == 0 || st.Peers[0].BytesReceived == 0 {
		t.Fatalf("b's link counts no bytes: %+v", st.Peers[0])
	}
}

func TestStatusJSONShape(t *testing.T) {
	a := startNode(t, "", "--listen", loop)
	code, out, _ := runQPQ(t, nil, "status", "--data", a.data, "--json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"fingerprint", "listen", "uptime_s", "peers", "handshakes"} {
		if _, ok := m[k]; !ok {
			t.Fatalf("status JSON lacks %q: %s", k, out)
		}
	}
	// The flood bounds' counters, and the store's damaged records.
	hs, _ := m["handshakes"].(map[string]any)
	for _, k := range []string{"in_progress", "retries", "refused"} {
		if _, ok := hs[k].(float64); !ok {
			t.Fatalf("status JSON handshakes lacks the number %q: %s", k, out)
		}
	}
	if st, _ := m["store"].(map[string]any); st["damaged"] != float64(0) {
		t.Fatalf("status JSON store.damaged: %v, want 0 on a fresh node", st["damaged"])
	}
	if peers, ok := m["peers"].([]any); !ok || len(peers) != 0 {
		t.Fatalf("peers must be an empty list, got %v", m["peers"])
	}
	if !strings.HasPrefix(m["listen"].(string), "127.0.0.1:") || strings.HasSuffix(m["listen"].(string), ":0") {
		t.Fatalf("listen must be the bound address, got %v", m["listen"])
	}
}

func TestWrongFingerprintRefusedListenerStaysUp(t *testing.T) {
	a := startNode(t, "", "--listen", loop)
	stranger, _ := identity.NewNode()
	b := startNode(t, "", "--listen", loop, "--peer", a.addr()+"#"+stranger.Fingerprint().String())
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "b to log the refused link", func() bool {
		return strings.Contains(b.stderr.String(), "peer fingerprint does not match the pinned one")
	})
	if st := b.mustStatus(); len(st.Peers) != 0 {
		t.Fatalf("b linked despite a wrong pin: %+v", st.Peers)
	}
	if st := a.mustStatus(); len(st.Peers) != 0 {
		t.Fatalf("a shows a link to a dialler that refused it: %+v", st.Peers)
	}
	// a still serves a correct peer.
	c := startNode(t, "", "--listen", loop, "--peer", a.peerArg())
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "a correct peer to link", func() bool { return a.linkedTo(c.fp()) })
}

func TestHostileInputsRefusedRealPeerKept(t *testing.T) {
	a := startNode(t, "", "--listen", loop)
	b := startNode(t, "", "--listen", loop, "--peer", a.peerArg())
	afp, bfp := a.fp(), b.fp()
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "the real link", func() bool { return a.linkedTo(bfp) && b.linkedTo(afp) })
	aAddr, _ := net.ResolveUDPAddr("udp", a.addr())

	// Random UDP datagrams of many sizes, including Initial-sized ones.
	u, err := net.DialUDP("udp", nil, aAddr)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1, 20, 64, 600, 1200, 1350, 1500} {
		for range 20 {
			buf := make([]byte, n)
			rand.Read(buf)
			u.Write(buf)
		}
	}
	u.Close()

	ctx := t.Context()
	// A TLS client with another ALPN.
	udp, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	defer udp.Close()
	if _, err := tr.Dial(ctx, aAddr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h3"}}, &quic.Config{HandshakeIdleTimeout: 5 * time.Second}); err == nil {
		t.Fatal("a client with ALPN h3 was accepted")
	}

	// A node-protocol client with no certificate.
	afpParsed, _ := identity.ParseFingerprint(afp)
	d, err := link.NewDialer(loop, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// TLS 1.3 refuses it after the client's half of the handshake, so the
	// refusal shows at the first RPC.
	if conn, err := d.Dial(ctx, a.addr(), afpParsed, link.ALPNPeer); err == nil {
		if _, err := link.Establish(ctx, conn, true, nilClient(), link.LocalHello("test", "qpq"), nil); err == nil {
			t.Fatal("a certificate-less dialler got a link")
		} else if !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("certificate-less dialler refused for another reason: %v", err)
		}
	}

	// The real link is still there and still answers.
	st := a.mustStatus()
	if len(st.Peers) != 1 || st.Peers[0].Fingerprint != bfp {
		t.Fatalf("after hostile inputs a lists %+v", st.Peers)
	}
	// A new real node still links.
	c := startNode(t, "", "--listen", loop, "--peer", a.peerArg())
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "a fresh node to link after the hostile inputs", func() bool { return a.linkedTo(c.fp()) })
	if !a.linkedTo(bfp) {
		t.Fatal("the original link dropped")
	}
}

func TestStaticPeerRedialledWhenItComesBack(t *testing.T) {
	aData := t.TempDir()
	a := startNode(t, aData, "--listen", loop)
	aAddr, afp := a.addr(), a.fp()
	b := startNode(t, "", "--listen", loop, "--peer", a.peerArg())
	bfp := b.fp()
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "the first link", func() bool { return b.linkedTo(afp) })

	a.signal(syscall.SIGTERM)
	if code, ok := a.waitExit(5 * time.Second); !ok || code != 0 {
		t.Fatalf("a did not exit 0 within 5s of SIGTERM: code %d exited %v", code, ok)
	}
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "b to notice the link is down", func() bool { return !b.linkedTo(afp) })
	// A dial to a silent port fails after the 10 s dial timeout.
	testkit.WaitForEvery(t, 30*time.Second, procPoll, "b to fail a redial and back off", func() bool {
		return strings.Contains(b.stderr.String(), "static peer unreachable")
	})

	// a comes back on the same address with the same identity.
	a2 := startNode(t, aData, "--listen", aAddr)
	if a2.fp() != afp {
		t.Fatal("identity changed across restart")
	}
	testkit.WaitForEvery(t, 90*time.Second, procPoll, "b to relink to the returning peer", func() bool {
		return b.linkedTo(afp) && a2.linkedTo(bfp)
	})
	if !strings.Contains(b.stderr.String(), "retry_in=") {
		t.Fatalf("b's retries do not say when they retry:\n%s", b.stderr)
	}
}

func TestKeyFileReadableByOthersStopsStart(t *testing.T) {
	data := t.TempDir()
	if code, _, errOut := runQPQ(t, nil, "node", "id", "--data", data, "--create"); code != 0 {
		t.Fatalf("node id: %d %s", code, errOut)
	}
	key := filepath.Join(data, "node.key")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runQPQ(t, nil, "node", "--data", data, "--listen", loop)
	if code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", code, errOut)
	}
	for _, want := range []string{key, "readable by group or others", "chmod 600"} {
		if !strings.Contains(errOut, want) {
			t.Fatalf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	// Said once: one log line, not a log line and a second copy.
	if n := strings.Count(errOut, "readable by group or others"); n != 1 {
		t.Fatalf("the error is reported %d times:\n%s", n, errOut)
	}
}

func TestSignalsStopWithinFiveSeconds(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			a := startNode(t, "", "--listen", loop)
			b := startNode(t, "", "--listen", loop, "--peer", a.peerArg())
			testkit.WaitForEvery(t, 20*time.Second, procPoll, "link", func() bool { return b.linkedTo(a.fp()) })
			b.signal(sig)
			code, ok := b.waitExit(5 * time.Second)
			if !ok || code != 0 {
				t.Fatalf("after %v: exited %v with %d, want 0 within 5s", sig, ok, code)
			}
			if _, err := os.Stat(filepath.Join(b.data, "qpq.sock")); !os.IsNotExist(err) {
				t.Fatalf("control socket left behind: %v", err)
			}
			// The peer sees the link close at once (not by idle timeout).
			testkit.WaitForEvery(t, 5*time.Second, procPoll, "a to drop the closed link", func() bool { return len(a.mustStatus().Peers) == 0 })
		})
	}
}

func TestUsageErrorsExit2NamingTheFlag(t *testing.T) {
	fp := strings.Repeat("a", 52)
	cases := []struct {
		env  []string
		args []string
		want string
	}{
		{nil, []string{"node", "--listen", "nope"}, "-listen"},
		{nil, []string{"node", "--peer", "127.0.0.1:1#abc"}, "-peer"},
		{nil, []string{"node", "--peer", "127.0.0.1#" + fp}, "-peer"},
		{nil, []string{"node", "--frobnicate"}, "-frobnicate"},
		{nil, []string{"node", "--log-level", "chatty"}, "-log-level"},
		{[]string{"QPQ_PEERS=127.0.0.1:1#nope"}, []string{"node"}, "QPQ_PEERS"},
		{nil, []string{"status", "extra"}, "unexpected argument"},
		{nil, []string{"nosuchcommand"}, "unknown command"},
	}
	for _, c := range cases {
		code, _, errOut := runQPQ(t, c.env, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("qpq %v (env %v): exit %d, stderr %q; want 2 naming %q", c.args, c.env, code, errOut, c.want)
		}
	}
}

func TestStatusWithoutNodeExits1(t *testing.T) {
	code, _, errOut := runQPQ(t, nil, "status", "--data", t.TempDir())
	if code != 1 || !strings.Contains(errOut, "no node answers") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestNodeIDJSONAndHelp(t *testing.T) {
	data := t.TempDir()
	code, out, _ := runQPQ(t, nil, "node", "id", "--data", data, "--create", "--json")
	var id struct{ Fingerprint, Short string }
	if code != 0 || json.Unmarshal([]byte(out), &id) != nil || len(id.Fingerprint) != 52 || len(id.Short) != 34 {
		t.Fatalf("node id --json: exit %d %q", code, out)
	}
	_, again, _ := runQPQ(t, nil, "node", "id", "--data", data, "--json")
	if again != out {
		t.Fatal("node id changed between runs")
	}
	for _, cmd := range []string{"node", "status", "version", "help"} {
		code, out, _ := runQPQ(t, nil, cmd, "-h")
		if code != 0 || !strings.Contains(out, "Usage: qpq") {
			t.Errorf("qpq %s -h: exit %d\n%s", cmd, code, out)
		}
	}
	code, out, _ = runQPQ(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "qpq ") || !strings.Contains(out, "go1.") {
		t.Fatalf("version: %q", out)
	}
}
