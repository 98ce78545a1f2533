package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/e2e/e2etest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "qpq-bridge-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "qpq-bridge")
	if out, err := exec.Command("go", "build", "-tags", "bridge", "-o", binary, ".").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a qpq-bridge process on 127.0.0.1.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stdout strings.Builder
	stderr strings.Builder
}

func (p *proc) out() string { p.mu.Lock(); defer p.mu.Unlock(); return p.stdout.String() }
func (p *proc) log() string { p.mu.Lock(); defer p.mu.Unlock(); return p.stderr.String() }

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binary, args...)}
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	so, _ := p.cmd.StdoutPipe()
	se, _ := p.cmd.StderrPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	copyTo := func(r io.Reader, b *strings.Builder) {
		defer wg.Done()
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			b.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
	}
	wg.Add(2)
	go copyTo(so, &p.stdout)
	go copyTo(se, &p.stderr)
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { wg.Wait(); done <- p.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("qpq-bridge exited badly on SIGTERM: %v\n%s", err, p.log())
			}
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			t.Errorf("qpq-bridge did not stop within 15 s")
		}
	})
	return p
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var (
	nodeAddrRE   = regexp.MustCompile(`node listens on (\S+)`)
	bridgeAddrRE = regexp.MustCompile(`bridge at (\S+)`)
)

// Two qpq-bridge processes of two islands link over libp2p on 127.0.0.1
// and carry a DM from a client of one to a client of the other; both stop
// cleanly on SIGTERM.
func TestTwoBridgeProcessesCarryADM(t *testing.T) {
	dir := t.TempDir()
	ids := map[string]identity.Fingerprint{}
	for _, n := range []string{"nord", "sued"} {
		code, out, stderr := runArgs(t, "id", "--data", filepath.Join(dir, n))
		if code != exitOK {
			t.Fatalf("id: %s", stderr)
		}
		fp, err := identity.ParseFingerprint(strings.Fields(out)[1])
		if err != nil {
			t.Fatal(err)
		}
		ids[n] = fp
	}
	common := func(n string) []string {
		return []string{"--data", filepath.Join(dir, n), "--listen", "127.0.0.1:0", "--mdns=false", "--bridge-island", n,
			"--bridge-secret", "a process test rendezvous", "--bridge-listen", "/ip4/127.0.0.1/udp/0/quic-v1"}
	}
	nord := startProc(t, append(common("nord"), "--bridge-allow", ids["sued"].String())...)
	waitFor(t, "nord's addresses", 20*time.Second, func() bool { return bridgeAddrRE.MatchString(nord.out()) })
	nordBridge := bridgeAddrRE.FindStringSubmatch(nord.out())[1]
	sued := startProc(t, append(common("sued"), "--bridge-allow", ids["nord"].String(), "--bridge-peer", nordBridge)...)
	waitFor(t, "the bridge link", 30*time.Second, func() bool {
		return strings.Contains(nord.log(), "bridge link up") && strings.Contains(sued.log(), "bridge link up")
	})

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	alice, bob := e2e.NewUser(), e2e.NewUser()
	dm := e2etest.SealDM(t, alice, e2etest.BundleOf(t, bob), []byte("over the internet"))
	ca, err := client.Dial(ctx, nodeAddrRE.FindStringSubmatch(nord.out())[1], ids["nord"])
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	if _, err := ca.Enqueue(ctx, dm); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "sued's node address", 5*time.Second, func() bool { return nodeAddrRE.MatchString(sued.out()) })
	cb, err := client.Dial(ctx, nodeAddrRE.FindStringSubmatch(sued.out())[1], ids["sued"])
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	signed, _ := bob.SignedBundle(1, time.Hour)
	mb, err := cb.Authenticate(ctx, bob, signed)
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Release()
	for {
		envs, err := mb.Fetch(ctx, 0, 5*time.Second)
		if err != nil {
			t.Fatalf("the DM did not reach sued: %v\nnord:\n%s\nsued:\n%s", err, nord.log(), sued.log())
		}
		for _, e := range envs {
			if e.ID == dm.ID {
				m, err := e2e.OpenDM(bob, e.Payload)
				if err != nil || string(m.Body) != "over the internet" {
					t.Fatalf("bob read %q, %v", m.Body, err)
				}
				return
			}
		}
	}
}
