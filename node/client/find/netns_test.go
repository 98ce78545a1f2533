package find_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/discovery"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/client/find"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/daemon"
)

// The namespace test re-executes this test binary inside namespaces the
// test creates: as a node (a real daemon behind a UDP delayer, announced
// by mDNS) or as a client measuring rounds with find.Peers.
const helperEnv = "QPQ_FIND_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "node":
		os.Exit(runNode())
	case "client":
		os.Exit(runClient())
	}
	os.Exit(m.Run())
}

// runNode serves a daemon on 127.0.0.1 inside its namespace, reachable
// from the link only through a delayer on 10.x:7443 that holds every
// packet for QPQ_DELAY each way (this kernel has no sch_netem), and
// announces port 7443 by mDNS. It prints its fingerprint, then runs until
// stdin closes.
func runNode() int {
	delay, err := time.ParseDuration(os.Getenv("QPQ_DELAY"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	id, err := identity.NewNode()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg := config.Default()
	cfg.Listen, cfg.MDNS, cfg.DataDir = "127.0.0.1:7444", false, os.Getenv("QPQ_DIR")
	cfg.Store = filepath.Join(cfg.DataDir, "store.db")
	d, err := daemon.NewWithIdentity(cfg, id, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	stopDelayer, err := delayer(os.Getenv("QPQ_ADDR")+":7443", "127.0.0.1:7444", delay)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	disc, err := discovery.Start(discovery.Config{FP: id.Fingerprint(), Port: 7443, Ifaces: []*regexp.Regexp{regexp.MustCompile("^eth0$")},
		BrowseEvery: time.Hour, IfacePollEvery: 200 * time.Millisecond}, func(discovery.Found) {})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(id.Fingerprint())
	io.Copy(io.Discard, os.Stdin)
	disc.Close()
	stopDelayer()
	cancel()
	d.Close()
	<-done
	return 0
}

// delayer forwards UDP between clients of listen and backend, holding
// each packet for d.
func delayer(listen, backend string, d time.Duration) (stop func(), _ error) {
	pc, err := net.ListenPacket("udp4", listen)
	if err != nil {
		return nil, err
	}
	ba, err := net.ResolveUDPAddr("udp4", backend)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	ups := map[string]*net.UDPConn{}
	var wg sync.WaitGroup
	later := func(f func()) {
		if d <= 0 {
			f()
			return
		}
		time.AfterFunc(d, f)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			up, ok := ups[from.String()]
			if !ok && len(ups) < 64 {
				if up, err = net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, ba); err == nil {
					ups[from.String()] = up
					wg.Add(1)
					go func() {
						defer wg.Done()
						b := make([]byte, 65536)
						for {
							n, err := up.Read(b)
							if err != nil {
								return
							}
							p := append([]byte(nil), b[:n]...)
							later(func() { pc.WriteTo(p, from) })
						}
					}()
				}
			}
			mu.Unlock()
			if up != nil {
				p := append([]byte(nil), buf[:n]...)
				later(func() { up.Write(p) })
			}
		}
	}()
	return func() {
		pc.Close()
		mu.Lock()
		for _, up := range ups {
			up.Close()
		}
		mu.Unlock()
		wg.Wait()
	}, nil
}

// wireNode is a find.Node as the client helper prints it.
type wireNode struct {
	Addr, FP, Err string
	RTT           time.Duration
}

// runClient measures QPQ_ROUNDS rounds and prints each as a JSON line.
func runClient() int {
	rounds, _ := strconv.Atoi(os.Getenv("QPQ_ROUNDS"))
	for range rounds {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ns, err := find.Peers(ctx, find.Config{})
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		var out []wireNode
		for _, n := range ns {
			w := wireNode{Addr: n.Addr, FP: n.FP.String(), RTT: n.RTT}
			if n.Err != nil {
				w.Err = n.Err.Error()
			}
			out = append(out, w)
		}
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
	}
	return 0
}

func needNetns(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root for network namespaces"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "needs the ip command (iproute2) for network namespaces"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

func ipc(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// lab makes a bridge namespace and plugs namespaces into it; everything
// is deleted when the test ends.
type lab struct {
	t      *testing.T
	prefix string
}

func newLab(t *testing.T) *lab {
	needNetns(t)
	l := &lab{t: t, prefix: fmt.Sprintf("qpqf%d", os.Getpid()%100000)}
	l.addNS("br")
	ipc(t, "-n", l.ns("br"), "link", "add", "br0", "type", "bridge")
	ipc(t, "-n", l.ns("br"), "link", "set", "br0", "up")
	return l
}

func (l *lab) ns(name string) string { return l.prefix + "-" + name }

func (l *lab) addNS(name string) {
	ipc(l.t, "netns", "add", l.ns(name))
	l.t.Cleanup(func() { exec.Command("ip", "netns", "del", l.ns(name)).Run() })
	ipc(l.t, "-n", l.ns(name), "link", "set", "lo", "up")
}

// plug gives namespace name an eth0 with addr/24 on the bridge.
func (l *lab) plug(name string, i int, addr string) {
	veth := fmt.Sprintf("qf%d", i)
	ipc(l.t, "-n", l.ns("br"), "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", l.ns(name))
	ipc(l.t, "-n", l.ns("br"), "link", "set", veth, "master", "br0", "up")
	ipc(l.t, "-n", l.ns(name), "addr", "add", addr+"/24", "dev", "eth0")
	ipc(l.t, "-n", l.ns(name), "link", "set", "eth0", "up")
	ipc(l.t, "-n", l.ns(name), "route", "add", "224.0.0.0/4", "dev", "eth0")
}

// startNode runs a node helper in namespace name and returns its
// fingerprint once it serves.
func (l *lab) startNode(name, addr string, delay time.Duration) string {
	t := l.t
	cmd := exec.Command("ip", "netns", "exec", l.ns(name), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=node", "QPQ_DELAY="+delay.String(), "QPQ_ADDR="+addr, "QPQ_DIR="+t.TempDir())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			t.Errorf("node %s did not stop", name)
		}
		if t.Failed() {
			t.Logf("node %s stderr:\n%s", name, stderr.String())
		}
	})
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	select {
	case fp := <-line:
		return fp
	case <-time.After(15 * time.Second):
		t.Fatalf("node %s did not start: %s", name, stderr.String())
	}
	return ""
}

// rounds runs the client helper in namespace name for n rounds.
func (l *lab) rounds(name string, n int) [][]find.Node {
	t := l.t
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", l.ns(name), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=client", "QPQ_ROUNDS="+strconv.Itoa(n))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("client: %v: %s", err, stderr.String())
	}
	var rs [][]find.Node
	for _, ln := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var ws []wireNode
		if err := json.Unmarshal([]byte(ln), &ws); err != nil {
			t.Fatalf("client printed %q: %v", ln, err)
		}
		var r []find.Node
		for _, w := range ws {
			fp, err := identity.ParseFingerprint(w.FP)
			if err != nil {
				t.Fatal(err)
			}
			n := find.Node{Addr: w.Addr, FP: fp, RTT: w.RTT, Trusted: true}
			if w.Err != "" {
				n.Err = fmt.Errorf("%s", w.Err)
			}
			r = append(r, n)
		}
		rs = append(rs, r)
	}
	return rs
}

// Three nodes announce on a link, one each with no delay, 0.2 ms and
// 15 ms each way; a client on the same link finds all three with their
// announced keys and addresses, and Auto picks the fastest; from the
// slow one it moves on the second round only; from the one a little
// slower it does not move at all.
func TestNetnsFindListsNodesAndAutoPicksTheFastest(t *testing.T) {
	l := newLab(t)
	delays := []time.Duration{0, 200 * time.Microsecond, 15 * time.Millisecond}
	fps := map[string]string{} // address -> fingerprint
	var addrs []string
	for i, d := range delays {
		name, addr := fmt.Sprintf("n%d", i), fmt.Sprintf("10.76.0.%d", i+1)
		l.addNS(name)
		l.plug(name, i, addr)
		fps[addr+":7443"] = l.startNode(name, addr, d)
		addrs = append(addrs, addr+":7443")
	}
	l.addNS("client")
	l.plug("client", 9, "10.76.0.100")

	// A node announces shortly after it starts; a round may miss one that
	// is still announcing, so rounds are taken until all three answer.
	var rs [][]find.Node
	deadline := time.Now().Add(20 * time.Second)
	for {
		rs = l.rounds("client", 3)
		if len(rs[0]) == 3 || time.Now().After(deadline) {
			break
		}
	}
	for i, r := range rs {
		if len(r) != 3 {
			t.Fatalf("round %d found %d nodes, want 3: %+v", i, len(r), r)
		}
		for _, n := range r {
			if fps[n.Addr] != n.FP.String() || n.Err != nil {
				t.Fatalf("round %d: node %s with key %s (%v); want the announced key %s", i, n.Addr, n.FP.Short(), n.Err, fps[n.Addr])
			}
		}
		t.Logf("round %d: %s %v, %s %v, %s %v", i, r[0].Addr, r[0].RTT, r[1].Addr, r[1].RTT, r[2].Addr, r[2].RTT)
	}
	byAddr := func(r []find.Node, addr string) find.Node {
		for _, n := range r {
			if n.Addr == addr {
				return n
			}
		}
		t.Fatalf("%s missing", addr)
		return find.Node{}
	}
	fast, near, slow := addrs[0], addrs[1], addrs[2]
	if s := byAddr(rs[0], slow).RTT; s < 30*time.Millisecond {
		t.Fatalf("the node 15 ms away each way answered in %v", s)
	}
	if n, _, ok := find.NewAuto(find.AutoConfig{}).Pick(rs[0]); !ok || n.Addr != fast {
		t.Fatalf("fresh Auto picked %s, want %s", n.Addr, fast)
	}
	a := find.NewAuto(find.AutoConfig{})
	a.Set(byAddr(rs[0], slow))
	if n, changed, _ := a.Pick(rs[1]); changed || n.Addr != slow {
		t.Fatalf("Auto left the slow node after one round for %s", n.Addr)
	}
	if n, changed, _ := a.Pick(rs[2]); !changed || n.Addr != fast {
		t.Fatalf("Auto on the second round: %s changed=%v, want %s", n.Addr, changed, fast)
	}
	b := find.NewAuto(find.AutoConfig{})
	b.Set(byAddr(rs[0], near))
	for i, r := range rs {
		if n, changed, _ := b.Pick(r); changed || n.Addr != near {
			t.Fatalf("round %d: Auto left the node about 1 ms slower for %s", i, n.Addr)
		}
	}
}
