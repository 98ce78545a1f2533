package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/node/control"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// qpqBin is the binary under test, built once by TestMain.
var qpqBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "qpq-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	qpqBin = filepath.Join(dir, "qpq")
	build := exec.Command("go", "build", "-o", qpqBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build qpq: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuf is a bytes.Buffer safe for a process writing and a test reading.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a qpq node running as a real process on loopback.
type proc struct {
	t              *testing.T
	ns             string // network namespace the node runs in; "" for the host's loopback
	cmd            *exec.Cmd
	data           string
	stdout, stderr *syncBuf
	done           chan struct{}
	err            error
}

// startNode runs `qpq node` on 127.0.0.1 with its own data dir (unless
// --data is given) and waits until its control socket answers.
func startNode(t *testing.T, data string, args ...string) *proc {
	t.Helper()
	if data == "" {
		data = t.TempDir()
	}
	p := startProc(t, data, append([]string{"node", "--data", data, "--mdns=false"}, args...)...)
	testkit.WaitForEvery(t, 15*time.Second, procPoll, "node control socket", func() bool {
		select {
		case <-p.done:
			t.Fatalf("node exited early (%v):\n%s", p.err, p.stderr)
		default:
		}
		_, err := p.status()
		return err == nil
	})
	return p
}

func startProc(t *testing.T, data string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, data: data, stdout: &syncBuf{}, stderr: &syncBuf{}, done: make(chan struct{})}
	p.cmd = exec.Command(qpqBin, args...)
	if len(args) > 0 && args[0] == "netns" {
		p.cmd = exec.Command("ip", args...)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.Env = cleanEnv()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("qpq %s stderr:\n%s", strings.Join(args, " "), p.stderr)
		}
	})
	return p
}

// cleanEnv drops QPQ_* variables the developer may have set.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "QPQ_") {
			env = append(env, kv)
		}
	}
	return env
}

func (p *proc) status() (control.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return control.QueryStatus(ctx, filepath.Join(p.data, "qpq.sock"))
}

// statusJSON runs `qpq status --json` as a user would and decodes it.
func (p *proc) statusJSON() (control.Status, error) {
	out, err := exec.Command(qpqBin, "status", "--data", p.data, "--json").Output()
	if err != nil {
		return control.Status{}, err
	}
	var st control.Status
	err = json.Unmarshal(out, &st)
	return st, err
}

func (p *proc) mustStatus() control.Status {
	p.t.Helper()
	st, err := p.statusJSON()
	if err != nil {
		p.t.Fatalf("qpq status --json: %v", err)
	}
	return st
}

func (p *proc) fp() string   { return p.mustStatus().Fingerprint }
func (p *proc) addr() string { return p.mustStatus().Listen }

// peerArg is what another node passes to --peer to link to p.
func (p *proc) peerArg() string { return p.addr() + "#" + p.fp() }

func (p *proc) linkedTo(fp string) bool {
	st, err := p.status()
	if err != nil {
		return false
	}
	for _, peer := range st.Peers {
		if peer.Fingerprint == fp {
			return true
		}
	}
	return false
}

func (p *proc) signal(sig syscall.Signal) { p.cmd.Process.Signal(sig) }

// waitExit waits up to d for the process to exit and returns its status.
func (p *proc) waitExit(d time.Duration) (int, bool) {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode(), true
	case <-time.After(d):
		return -1, false
	}
}

// procPoll is how often process tests poll a node: they have no event to
// wait on but the process's own answers, and each costs a query.
const procPoll = 50 * time.Millisecond

// runQPQ runs a short qpq command and returns its exit code and output.
func runQPQ(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runQPQIn(t, "", env, args...)
}

// runQPQIn runs a short qpq command inside network namespace ns (a client
// of a node in that namespace must be there too; "" is the host).
func runQPQIn(t *testing.T, ns string, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	if ns == "" {
		// Network safety: from the host's namespace a client may only
		// talk to nodes on loopback.
		for i, a := range args {
			if a == "--node" && i+1 < len(args) && !strings.HasPrefix(args[i+1], "127.") {
				t.Fatalf("test bug: a client in the host namespace was pointed at %s; run it in the node's namespace", args[i+1])
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qpqBin, args...)
	if ns != "" {
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, qpqBin}, args...)...)
	}
	cmd.Env = append(cleanEnv(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), o.String(), e.String()
		}
		t.Fatalf("run qpq %v: %v", args, err)
	}
	return 0, o.String(), e.String()
}

func nilClient() capnp.Client { return capnp.Client{} }
