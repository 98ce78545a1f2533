package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// chatTerm is one `qpq chat` in a real terminal: a tmux server of its
// own (its socket in the test's temp dir, no user config), one pane 160
// columns wide running the chat. What capture-pane returns is what the
// person sees.
type chatTerm struct {
	t    *testing.T
	sock string
	name string
}

// startChatTerm runs `qpq chat ARGS...` for a user in a new tmux server.
// ns runs it inside that network namespace ("" the host's). env is added
// to the chat's environment (QPQ_* of the developer's shell are dropped).
func startChatTerm(t *testing.T, ns string, env []string, args ...string) *chatTerm {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("the chat tests need tmux; CI must provide it")
		}
		t.Skip("skipping: needs tmux")
	}
	dir := t.TempDir()
	c := &chatTerm{t: t, sock: filepath.Join(dir, "tmux.sock"), name: "chat"}
	conf := filepath.Join(dir, "tmux.conf")
	// remain-on-exit keeps a dead chat's last screen and exit status.
	if err := os.WriteFile(conf, []byte("set -g remain-on-exit on\nset -g history-limit 5000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	argv := append([]string{qpqBin, "chat"}, args...)
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	// env(1) puts the variables in the chat's environment whatever the
	// tmux server's global environment holds.
	argv = append(append([]string{"env"}, append(append([]string{"TERM=screen"}, userEnv...), env...)...), argv...)
	cmd := exec.Command("tmux", "-S", c.sock, "-f", conf, "new-session", "-d", "-s", c.name, "-x", "160", "-y", "48", "exec "+shellJoin(argv))
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("chat screen at the end (%s):\n%s", strings.Join(args, " "), c.history())
		}
		c.tmux("kill-server")
	})
	return c
}

// shellJoin quotes argv for the shell tmux runs the command with.
func shellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

func (c *chatTerm) tmux(args ...string) (string, error) {
	out, err := exec.Command("tmux", append([]string{"-S", c.sock}, args...)...).Output()
	return string(out), err
}

// screen is the visible pane, trailing blank lines dropped.
func (c *chatTerm) screen() string {
	out, _ := c.tmux("capture-pane", "-p", "-t", c.name)
	return strings.TrimRight(out, "\n")
}

// history is the scrollback and the visible pane, wrapped lines joined.
func (c *chatTerm) history() string {
	out, _ := c.tmux("capture-pane", "-p", "-J", "-S", "-", "-E", "-", "-t", c.name)
	return strings.TrimRight(out, "\n")
}

// typeLine types s and Enter, as a person would (literal keys).
func (c *chatTerm) typeLine(s string) {
	c.t.Helper()
	c.typeKeys(s)
	if _, err := c.tmux("send-keys", "-t", c.name, "Enter"); err != nil {
		c.t.Fatalf("tmux send-keys: %v", err)
	}
}

// typeKeys types s without Enter.
func (c *chatTerm) typeKeys(s string) {
	c.t.Helper()
	if _, err := c.tmux("send-keys", "-t", c.name, "-l", s); err != nil {
		c.t.Fatalf("tmux send-keys: %v", err)
	}
}

// waitFor waits until the whole history satisfies ok.
func (c *chatTerm) waitFor(d time.Duration, what string, ok func(string) bool) string {
	c.t.Helper()
	var h string
	testkit.WaitForEvery(c.t, d, procPoll, what, func() bool {
		h = c.history()
		return ok(h)
	})
	return h
}

// waitText waits until the history shows s (count times when given).
func (c *chatTerm) waitText(d time.Duration, s string) string {
	c.t.Helper()
	return c.waitFor(d, fmt.Sprintf("the chat to show %q", s), func(h string) bool { return strings.Contains(h, s) })
}

// pid is the chat's process id (the pane's process: env execs the chat,
// and so does ip netns exec).
func (c *chatTerm) pid() int {
	c.t.Helper()
	out, err := c.tmux("display-message", "-p", "-t", c.name, "#{pane_pid}")
	pid, perr := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || perr != nil {
		c.t.Fatalf("pane pid %q: %v %v", out, err, perr)
	}
	return pid
}

// dead reports whether the chat has exited, and its exit status.
func (c *chatTerm) dead() (bool, string) {
	out, _ := c.tmux("display-message", "-p", "-t", c.name, "#{pane_dead} #{pane_dead_status} #{pane_dead_signal}")
	f := strings.Fields(out)
	return len(f) > 0 && f[0] == "1", strings.Join(f[1:], " ")
}

// alive fails the test when the chat has exited.
func (c *chatTerm) alive() {
	c.t.Helper()
	if dead, status := c.dead(); dead {
		c.t.Fatalf("the chat exited (%s):\n%s", status, c.history())
	}
}

// kill9 kills the chat as kill -9 would.
func (c *chatTerm) kill9() {
	c.t.Helper()
	syscall.Kill(c.pid(), syscall.SIGKILL)
	testkit.WaitForEvery(c.t, 10*time.Second, procPoll, "the chat to die", func() bool { d, _ := c.dead(); return d })
}

// lines returns the lines of s that contain sub.
func linesWith(s, sub string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}
