package discovery

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// The namespace tests re-execute the test binary inside a namespace with
// helperEnv set; the helper runs discovery and prints each Found as a JSON
// line until it is killed or its stdin closes.
const helperEnv = "QPQ_DISCOVERY_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(runHelper())
	}
	os.Exit(m.Run())
}

func runHelper() int {
	fp, err := identity.ParseFingerprint(os.Getenv("QPQ_FP"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	port, _ := strconv.Atoi(os.Getenv("QPQ_PORT"))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	d, err := Start(Config{
		FP: fp, Port: port, Domain: "qpq",
		BrowseEvery: 2 * time.Second, IfacePollEvery: 300 * time.Millisecond,
		Logger: log,
	}, func(f Found) {
		mu.Lock()
		defer mu.Unlock()
		enc.Encode(struct {
			FP    string `json:"fp"`
			Addr  string `json:"addr"`
			Iface string `json:"iface"`
		}{f.FP.String(), f.Addr, f.Iface})
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	eof := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(eof) }()
	select {
	case <-sig:
	case <-eof:
	}
	if err := d.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// needNetns skips without root or ip, except under CI=true.
func needNetns(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root for network namespaces"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "needs the ip command for network namespaces"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// lab is a bridge namespace and node namespaces joined to it by veth pairs.
type lab struct {
	t      *testing.T
	prefix string
	bridge string
	lines  chan struct{} // size 1: a helper printed a line
}

func ipc(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func newLab(t *testing.T) *lab {
	needNetns(t)
	l := &lab{t: t, lines: make(chan struct{}, 1), prefix: fmt.Sprintf("qpqd%d%s", os.Getpid()%100000, strings.ToLower(t.Name()[4:min(len(t.Name()), 9)]))}
	l.bridge = l.prefix + "-br"
	l.addNS(l.bridge)
	ipc(t, "-n", l.bridge, "link", "add", "br0", "type", "bridge")
	ipc(t, "-n", l.bridge, "link", "set", "br0", "up")
	return l
}

// addNS creates a namespace with loopback up, deleted when the test ends.
func (l *lab) addNS(name string) {
	ipc(l.t, "netns", "add", name)
	l.t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	ipc(l.t, "-n", name, "link", "set", "lo", "up")
}

// node returns the namespace name of node i.
func (l *lab) node(i int) string { return fmt.Sprintf("%s-n%d", l.prefix, i) }

// addr returns node i's IPv4 address.
func addr(i int) string { return fmt.Sprintf("10.77.0.%d", i+1) }

// plug gives node i an eth0 on the bridge, with its address and a route for
// multicast.
func (l *lab) plug(i int) {
	ns, peer := l.node(i), fmt.Sprintf("v%d", i)
	ipc(l.t, "-n", l.bridge, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns)
	ipc(l.t, "-n", l.bridge, "link", "set", peer, "master", "br0", "up")
	ipc(l.t, "-n", ns, "addr", "add", addr(i)+"/24", "dev", "eth0")
	ipc(l.t, "-n", ns, "link", "set", "eth0", "up")
	ipc(l.t, "-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
}

// helper is one discovery process in a namespace.
type helper struct {
	fp    identity.Fingerprint
	port  int
	mu    sync.Mutex
	found map[string]string // fingerprint -> last address
}

func (l *lab) startHelper(i int) *helper {
	t := l.t
	h := &helper{fp: testFP(byte(16 * (i + 1))), port: 7000 + i, found: map[string]string{}}
	cmd := exec.Command("ip", "netns", "exec", l.node(i), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "QPQ_FP="+h.fp.String(), "QPQ_PORT="+strconv.Itoa(h.port))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), "helper.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var f struct{ FP, Addr, Iface string }
			if json.Unmarshal(sc.Bytes(), &f) != nil {
				continue
			}
			h.mu.Lock()
			h.found[f.FP] = f.Addr
			h.mu.Unlock()
			select {
			case l.lines <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		stdin.Close() // asks the helper to Close and exit
		exited := make(chan error, 1)
		go func() { <-done; exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("helper %d: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("helper %d did not exit", i)
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("helper %d log tail:\n%s", i, b)
		}
	})
	return h
}

// waitFinds waits until every helper has found every other with the right
// address.
func (l *lab) waitFinds(hs map[int]*helper, within time.Duration) {
	t := l.t
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		missing := ""
		for i, h := range hs {
			h.mu.Lock()
			for j, o := range hs {
				if i == j {
					continue
				}
				want := fmt.Sprintf("%s:%d", addr(j), o.port)
				if got := h.found[o.fp.String()]; got != want {
					missing += fmt.Sprintf(" node %d sees node %d at %q, want %q;", i, j, got, want)
				}
			}
			if _, self := h.found[h.fp.String()]; self {
				missing += fmt.Sprintf(" node %d found itself;", i)
			}
			h.mu.Unlock()
		}
		if missing == "" {
			return
		}
		select {
		case <-l.lines:
		case <-deadline.C:
			t.Fatalf("not everyone found:%s", missing)
		}
	}
}

func TestNetnsFindEachOther(t *testing.T) {
	l := newLab(t)
	hs := map[int]*helper{}
	for i := range 3 {
		l.addNS(l.node(i))
		l.plug(i)
	}
	for i := range 3 {
		hs[i] = l.startHelper(i)
	}
	l.waitFinds(hs, 20*time.Second)

	// A fourth node whose interface appears only after discovery started.
	l.addNS(l.node(3))
	hs[3] = l.startHelper(3)
	time.Sleep(time.Second) // let it start with no interface at all
	l.plug(3)
	l.waitFinds(hs, 20*time.Second)
}

// startAvahi runs avahi-daemon in node i's namespace with its own config,
// no D-Bus, and a private /run; it skips the test if avahi cannot run.
func (l *lab) startAvahi(i int) {
	t := l.t
	bin, err := exec.LookPath("avahi-daemon")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("avahi-daemon not installed")
		}
		t.Skip("avahi-daemon not installed")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "avahi.conf")
	err = os.WriteFile(conf, []byte("[server]\nhost-name=avahi"+strconv.Itoa(i)+"\nuse-ipv4=yes\nuse-ipv6=yes\nallow-interfaces=eth0\nenable-dbus=no\n"+
		"[wide-area]\nenable-wide-area=no\n[publish]\npublish-addresses=yes\n"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	// ip netns exec gives the command its own mount namespace, so the
	// tmpfs over /run (for avahi's pid file) stays out of the host's view.
	script := `mount -t tmpfs qpqtest /run && mkdir -p /run/avahi-daemon && exec "$0" --no-drop-root --no-chroot --no-rlimits -f "$1"`
	cmd := exec.Command("ip", "netns", "exec", l.node(i), "sh", "-c", script, bin, conf)
	logf, err := os.Create(filepath.Join(dir, "avahi.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Skipf("avahi-daemon cannot start: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logf.Close()
	})
	// avahi logs "Server startup complete" once it has bound 5353 and
	// probed its host name.
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		b, _ := os.ReadFile(logf.Name())
		if strings.Contains(string(b), "Server startup complete") {
			return
		}
		select {
		case err := <-exited:
			exited <- err
			t.Skipf("avahi-daemon cannot run in a namespace (%v):\n%s", err, b)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			t.Skipf("avahi-daemon did not finish starting:\n%s", b)
		}
	}
}

// TestNetnsBesideAvahi runs avahi-daemon on two of three nodes, started
// after qpq on one and before qpq on the other, and checks that discovery
// still finds everyone.
func TestNetnsBesideAvahi(t *testing.T) {
	l := newLab(t)
	for i := range 3 {
		l.addNS(l.node(i))
		l.plug(i)
	}
	hs := map[int]*helper{}
	hs[0] = l.startHelper(0)
	l.startAvahi(0) // binds 5353 after qpq
	l.startAvahi(1) // binds 5353 before qpq
	hs[1] = l.startHelper(1)
	hs[2] = l.startHelper(2)
	l.waitFinds(hs, 30*time.Second)
}
