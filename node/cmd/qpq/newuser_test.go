package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// A newcomer's mistakes, each answered with what went wrong and what to
// run instead (issue 9, defects 5, 8, 9 and 11).

func TestNodeIDRefusesADirWithoutIdentity(t *testing.T) {
	data := filepath.Join(t.TempDir(), "forgot-data")
	code, out, errOut := runQPQ(t, nil, "node", "id", "--data", data)
	if code != 1 || out != "" {
		t.Fatalf("node id in a dir with no identity: exit %d, stdout %q; want 1 and nothing on stdout", code, out)
	}
	for _, want := range []string{"no node identity in " + data, "--data", "--create"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "node.key")); !os.IsNotExist(err) {
		t.Fatalf("node id created a key: %v", err)
	}
	// --create makes one, and afterwards plain node id shows that one.
	code, created, errOut := runQPQ(t, nil, "node", "id", "--data", data, "--create", "--json")
	if code != 0 || !strings.Contains(errOut, "created a new node identity in "+data) {
		t.Fatalf("node id --create: exit %d, stderr %q", code, errOut)
	}
	code, again, _ := runQPQ(t, nil, "node", "id", "--data", data, "--json")
	if code != 0 || again != created {
		t.Fatalf("node id after --create: exit %d, %q, want %q", code, again, created)
	}
	// The node that starts in that dir has that fingerprint.
	var id idJSON
	if err := json.Unmarshal([]byte(created), &id); err != nil {
		t.Fatal(err)
	}
	if fp := startNode(t, data, "--listen", loop).fp(); fp != id.Fingerprint {
		t.Fatalf("node runs as %s, node id said %s", fp, id.Fingerprint)
	}
}

func TestSendWithoutIdentityNamesTheHome(t *testing.T) {
	h := t.TempDir()
	for _, to := range [][]string{{"--to", "bob"}, {"--channel", "town"}} {
		args := append([]string{"send", "--home", h, "--node", "127.0.0.1:1", "--text", "hi"}, to...)
		code, _, errOut := runQPQ(t, userEnv, args...)
		if code != 1 || !strings.Contains(errOut, "no identity in "+h) || !strings.Contains(errOut, "qpq id new --home "+h) {
			t.Errorf("send %v from an empty home: exit %d, stderr %q; want 1 naming the home and qpq id new", to, code, errOut)
		}
		if strings.Contains(errOut, "unknown") || strings.Contains(errOut, "no channel") {
			t.Errorf("send %v blames the recipient: %q", to, errOut)
		}
	}
}

func TestSendRefusesEmptyMessages(t *testing.T) {
	alice, bob := newUser(t), newUser(t)
	for _, text := range []string{"", "  \n\t"} {
		code, out, errOut := runQPQ(t, userEnv, "send", "--home", alice.home, "--node", "127.0.0.1:1", "--to", bob.fp, "--text", text)
		if code != 2 || out != "" || !strings.Contains(errOut, "--text is empty") {
			t.Errorf("send --text %q: exit %d, stdout %q, stderr %q; want 2 and --text is empty", text, code, out, errOut)
		}
	}
	cmd := exec.Command(qpqBin, "send", "--home", alice.home, "--node", "127.0.0.1:1", "--to", bob.fp)
	cmd.Env = append(cleanEnv(), userEnv...)
	cmd.Stdin = strings.NewReader("\n")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "standard input was empty") {
		t.Fatalf("send with an empty stdin: %v, %q; want exit 1 saying standard input was empty", err, out)
	}
}

func TestChannelJoinNeverRenamesSilently(t *testing.T) {
	alice := newUser(t)
	code, share, errOut := runQPQ(t, userEnv, "channel", "new", "town", "--home", alice.home)
	share = strings.TrimSpace(share)
	if code != 0 {
		t.Fatalf("channel new: %d %s", code, errOut)
	}
	list := func() string {
		_, out, _ := runQPQ(t, userEnv, "channel", "list", "--json", "--home", alice.home)
		return out
	}
	before := list()

	// Joining again under a new name is refused, naming the old one.
	code, _, errOut = runQPQ(t, userEnv, "channel", "join", share, "--name", "mytown", "--home", alice.home)
	if code != 1 || !strings.Contains(errOut, `already joined this channel as "town"`) || !strings.Contains(errOut, "--rename") {
		t.Fatalf("join --name of a joined channel: exit %d, stderr %q", code, errOut)
	}
	if after := list(); after != before {
		t.Fatalf("a refused join changed the channels:\n%s\nwas\n%s", after, before)
	}
	// --rename does it, keeping one entry.
	code, out, errOut := runQPQ(t, userEnv, "channel", "join", share, "--name", "mytown", "--rename", "--home", alice.home)
	if code != 0 || !strings.Contains(out, `renamed channel "town" to "mytown"`) {
		t.Fatalf("join --rename: exit %d, %q %q", code, out, errOut)
	}
	if after := list(); strings.Count(after, "\n") != 1 || !strings.Contains(after, `"name":"mytown"`) {
		t.Fatalf("after rename: %s", after)
	}
	// Joining again from the share (which says "town") keeps the name
	// chosen, and says so.
	renamed := list()
	code, _, errOut = runQPQ(t, userEnv, "channel", "join", share, "--home", alice.home)
	if code != 0 || !strings.Contains(errOut, `already joined this channel as "mytown"`) || list() != renamed {
		t.Fatalf("join of a joined channel: exit %d, stderr %q", code, errOut)
	}

	// A taken name in channel new points to something that works.
	code, _, errOut = runQPQ(t, userEnv, "channel", "new", "mytown", "--home", alice.home)
	if code != 1 || strings.Contains(errOut, "--name") || !strings.Contains(errOut, "qpq channel new OTHER-NAME") {
		t.Fatalf("channel new with a taken name: exit %d, stderr %q", code, errOut)
	}
	// And in join, --name is the way (it works).
	code, other, _ := runQPQ(t, userEnv, "channel", "new", "mytown", "--home", newUser(t).home)
	if code != 0 {
		t.Fatal("channel new in another home")
	}
	code, _, errOut = runQPQ(t, userEnv, "channel", "join", strings.TrimSpace(other), "--home", alice.home)
	if code == 0 || !strings.Contains(errOut, "--name OTHER-NAME") {
		t.Fatalf("join under a taken name: exit %d, stderr %q", code, errOut)
	}
}

func TestStoreTooSmallForOneLargeMessageWarns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qpq")
	body := "config qpq 'main'\n\toption listen '127.0.0.1:7443'\n\toption store_max_bytes '256K'\n"
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, _ := runQPQ(t, nil, "config", "check", path)
	want := path + ":3: main.store_max_bytes: warning: 256K gives each source a share of 16K"
	if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "store full for this source") || !strings.Contains(out, "set at least 337K") {
		t.Fatalf("config check: exit %d\n%s\nwant 0 and a line starting %q", code, out, want)
	}
	// The node starts, and says the same in its log.
	p := startNode(t, "", "--listen", loop, "--store-max-bytes", "256K")
	if !strings.Contains(p.stderr.String(), "level=WARN") || !strings.Contains(p.stderr.String(), "set at least 337K") {
		t.Fatalf("node log lacks the warning:\n%s", p.stderr)
	}
	// A store with room for one large message per source is quiet.
	q := startNode(t, "", "--listen", loop, "--store-max-bytes", "337K")
	if strings.Contains(q.stderr.String(), "level=WARN") {
		t.Fatalf("warning for a store that fits:\n%s", q.stderr)
	}
}

func TestHelpIsOnlyTheUsage(t *testing.T) {
	for _, c := range commands() {
		if c.name == "help" {
			continue // qpq help -h is the overview
		}
		code, out, errOut := runQPQ(t, nil, c.name, "-h")
		if code != 0 || !strings.HasPrefix(out, "Usage: qpq") || errOut != "" {
			t.Errorf("qpq %s -h: exit %d, stderr %q, stdout starts %.40q", c.name, code, errOut, out)
		}
	}
	// Errors still point to -h.
	if _, _, errOut := runQPQ(t, nil, "status", "--frob"); !strings.Contains(errOut, "Run 'qpq status -h' for usage.") {
		t.Errorf("status --frob: %q", errOut)
	}
	// One-letter flags are shown as they are typed.
	if _, out, _ := runQPQ(t, nil, "selftest", "-h"); !strings.Contains(out, "\n  -v\n") || strings.Contains(out, "--v") {
		t.Errorf("selftest -h:\n%s", out)
	}
}

func TestStatusHelpNamesEveryJSONKey(t *testing.T) {
	a := startNode(t, "", "--listen", loop)
	b := startNode(t, "", "--listen", loop, "--peer", a.peerArg())
	afp := a.fp()
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "the link", func() bool { return b.linkedTo(afp) })
	_, out, _ := runQPQ(t, nil, "status", "--data", b.data, "--json")
	_, help, _ := runQPQ(t, nil, "status", "-h")
	var keys []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k != "kinds" { // its keys are envelope kinds, not fields
					walk(x)
				}
				keys = append(keys, k)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	walk(m)
	for _, k := range keys {
		if !strings.Contains(help, k) {
			t.Errorf("status -h does not name %q", k)
		}
	}
}

func TestNodeBannerLinkLineCanBePasted(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "a")
	a := startNode(t, data, "--listen", loop)
	testkit.WaitForEvery(t, 5*time.Second, procPoll, "the banner", func() bool { return strings.Contains(a.stdout.String(), "Check links") })
	var line string
	for _, l := range strings.Split(a.stdout.String(), "\n") {
		if strings.Contains(l, " node --data ") {
			line = strings.TrimSpace(l)
		}
	}
	fields := strings.Fields(line)
	if len(fields) < 2 || fields[0] != qpqBin || strings.Contains(line, "DIR2") {
		t.Fatalf("link line %q: want it to start with the binary %s and name a real dir", line, qpqBin)
	}
	// Pasted as it is into a shell, it starts a second node that links to
	// the first.
	sh := exec.Command("/bin/sh", "-c", "exec "+line)
	sh.Env = cleanEnv()
	var errOut syncBuf
	sh.Stderr = &errOut
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { sh.Wait(); close(exited) }()
	t.Cleanup(func() {
		sh.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("pasted node's stderr:\n%s", errOut.String())
		}
	})
	afp := a.fp()
	second := &proc{t: t, data: data + "2"}
	testkit.WaitForEvery(t, 20*time.Second, procPoll, "the pasted node to link", func() bool {
		st, err := second.status()
		return err == nil && len(st.Peers) == 1 && st.Peers[0].Fingerprint == afp
	})
}

func repoRoot() string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", "..")
}

func TestMakeTestChecksItsToolsFirst(t *testing.T) {
	root := repoRoot()
	// make test runs the check before anything else.
	cmd := exec.Command("make", "-n", "test")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("make -n test: %v", err)
	}
	if first, _, _ := strings.Cut(string(out), "\n"); first != ".ci/deps" {
		t.Fatalf("make test starts with %q, want .ci/deps", first)
	}
	// As a user, on a machine without the tools, one line says what to
	// run. (A stub id says "not root"; the PATH has nothing else, so
	// nothing could be installed even by mistake.)
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "id"), []byte("#!/bin/sh\necho 1000\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	check := exec.Command("/bin/bash", filepath.Join(root, ".ci", "deps"))
	check.Env = []string{"PATH=" + bin}
	var stdout, stderr strings.Builder
	check.Stdout, check.Stderr = &stdout, &stderr
	err = check.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf(".ci/deps without tools: %v, want exit 1; stderr %q", err, stderr.String())
	}
	msg := stderr.String()
	if stdout.Len() != 0 || strings.Count(msg, "\n") != 1 {
		t.Fatalf("want one line on stderr, got stdout %q stderr %q", stdout.String(), msg)
	}
	for _, want := range []string{"capnp", "qemu-mips-static", "shellcheck", "sudo apt-get install -y ", "capnproto", "qemu-user-static", "xz-utils"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the line lacks %q: %s", want, msg)
		}
	}
	if strings.Count(msg, "qemu-user-static") != 1 {
		t.Errorf("a package named twice: %s", msg)
	}
	// .ci/run uses the same check.
	ci, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
	if err != nil || !strings.Contains(string(ci), "\n.ci/deps\n") {
		t.Fatalf(".ci/run does not call .ci/deps: %v", err)
	}
}

func TestREADMEClientExamplesNameTheirNode(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		cmd, _, _ := strings.Cut(strings.TrimSpace(line), "#")
		f := strings.Fields(cmd)
		if len(f) < 2 || (f[0] != "./qpq" && f[0] != "qpq") || (f[1] != "send" && f[1] != "recv") {
			continue
		}
		n++
		// Without --node (or QPQ_NODE set on the line) the command exits 2.
		if !strings.Contains(cmd, "--node ") && !strings.Contains(cmd, "QPQ_NODE=") {
			t.Errorf("README example exits 2 for want of a node: %s", strings.TrimSpace(line))
		}
	}
	if n == 0 {
		t.Fatal("no send or recv example found in README.md")
	}
}

func TestJSONThatCannotBeWrittenFails(t *testing.T) {
	data := t.TempDir()
	if code, _, e := runQPQ(t, nil, "node", "id", "--data", data, "--create"); code != 0 {
		t.Fatal(e)
	}
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer full.Close()
	cmd := exec.Command(qpqBin, "node", "id", "--data", data, "--json")
	cmd.Env = cleanEnv()
	cmd.Stdout = full
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "write JSON") {
		t.Fatalf("node id --json into a full disk: %v, stderr %q; want exit 1 saying write JSON", err, stderr.String())
	}
}
