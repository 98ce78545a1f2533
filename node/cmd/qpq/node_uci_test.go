package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// uciFile writes a uci config for a node on loopback with its files in
// data, plus extra lines, and returns its path.
func uciFile(t *testing.T, data, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qpq")
	body := "config qpq 'main'\n" +
		"\toption listen '127.0.0.1:0'\n" +
		"\toption data '" + data + "'\n" +
		"\toption store '" + filepath.Join(data, "store.db") + "'\n" +
		"\toption control '" + filepath.Join(data, "qpq.sock") + "'\n" +
		"\toption mdns 'Off'\n" + extra
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startUCINode runs `qpq node --uci path args...` with env added to a clean
// environment and waits until its control socket (in data) answers.
func startUCINode(t *testing.T, data, path string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, data: data, stdout: &syncBuf{}, stderr: &syncBuf{}, done: make(chan struct{})}
	p.cmd = exec.Command(qpqBin, append([]string{"node", "--uci", path}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.cmd.Env = append(cleanEnv(), env...)
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
			t.Logf("qpq node --uci stderr:\n%s", p.stderr)
		}
	})
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

// settingsLine returns the one log line in which a node started with --uci
// says what it read.
func settingsLine(t *testing.T, p *proc) string {
	t.Helper()
	var found []string
	for _, l := range strings.Split(p.stderr.String(), "\n") {
		if strings.Contains(l, "msg=settings ") {
			found = append(found, l)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one settings line, got %d:\n%s", len(found), p.stderr)
	}
	return found[0]
}

func wantFields(t *testing.T, line string, fields ...string) {
	t.Helper()
	for _, f := range fields {
		if !strings.Contains(" "+line+" ", " "+f+" ") {
			t.Errorf("settings line lacks %s:\n%s", f, line)
		}
	}
}

// The node reads the uci file itself, as `qpq config check` reads it, and
// says in one log line what it read; mem_limit becomes its memory limit.
func TestConfigNodeUCIReadsTheFile(t *testing.T) {
	data := t.TempDir()
	path := uciFile(t, data, "\toption domain 'ffmesh'\n\toption max_links '3'\n\toption mem_limit '48M'\n\toption mdns_iface '^br-'\n")
	p := startUCINode(t, data, path, nil)
	st := p.mustStatus()
	if !strings.HasPrefix(st.Listen, "127.0.0.1:") {
		t.Errorf("listening on %s", st.Listen)
	}
	wantFields(t, settingsLine(t, p), "uci="+path, "listen=127.0.0.1:0", "data="+data, "store="+filepath.Join(data, "store.db"),
		"mdns=off", "mdns_iface=^br-", "domain=ffmesh", "max_links=3", "mem_limit=50331648")
}

// Flags beside --uci override the file; an explicit GOMEMLIMIT wins over
// mem_limit; mem_limit 0 is no limit.
func TestConfigNodeUCIFlagsAndGOMEMLIMITWin(t *testing.T) {
	data := t.TempDir()
	path := uciFile(t, data, "\toption max_links '3'\n\toption mem_limit '48M'\n")
	p := startUCINode(t, data, path, []string{"GOMEMLIMIT=64MiB"}, "--max-links", "5")
	wantFields(t, settingsLine(t, p), "max_links=5", "mem_limit=67108864")

	data = t.TempDir()
	p = startUCINode(t, data, uciFile(t, data, "\toption mem_limit '0'\n"), nil)
	wantFields(t, settingsLine(t, p), "mem_limit=none")
}

// A file with any problem starts no node: exit 2, each problem printed as
// the check prints it.
func TestConfigNodeUCIRefusesABadFile(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	path := uciFile(t, data, "\toption domain ffmesh; option max_links 3\n\toption store 'rel.db'\n")
	_, checked, _ := runQPQ(t, nil, "config", "check", path)
	code, out, errOut := runQPQ(t, nil, "node", "--uci", path)
	if code != 2 || out != "" {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s", code, out, errOut)
	}
	problems := strings.TrimSpace(checked)
	if !strings.HasPrefix(errOut, problems+"\n") || strings.Count(problems, "\n") != 1 {
		t.Errorf("stderr:\n%s\nwant the check's problems first:\n%s", errOut, problems)
	}
	if !strings.Contains(errOut, "qpq node: not starting: "+path+" has 2 problem(s)") {
		t.Errorf("stderr:\n%s", errOut)
	}
	if _, err := os.Stat(data); err == nil {
		t.Errorf("the data dir %s was created: a node started", data)
	}
	code, _, errOut = runQPQ(t, nil, "node", "--uci", filepath.Join(t.TempDir(), "missing"))
	if code != 2 || !strings.Contains(errOut, "missing") {
		t.Errorf("missing file: exit %d %q", code, errOut)
	}
}
