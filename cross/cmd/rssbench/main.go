// Command rssbench measures a qpq node's resident memory, natively: idle
// after a settling period, then under a load of node links and client RPCs.
// It prints VmRSS and VmHWM from /proc beside DESIGN's RAM budget. Every
// node it starts listens on 127.0.0.1 and is stopped before it exits.
//
//	go run ./cross/cmd/rssbench -bin ./qpq [-idle 60s] [-load 30s]
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/schemas"
)

const (
	idleBudgetMiB = 16
	loadBudgetMiB = 48
)

func main() {
	bin := flag.String("bin", "./qpq", "qpq binary to measure")
	idle := flag.Duration("idle", 60*time.Second, "how long the node idles before the idle reading")
	load := flag.Duration("load", 30*time.Second, "how long the load runs")
	peers := flag.Int("peers", 8, "node processes linked to the measured node during the load")
	clients := flag.Int("clients", 16, "concurrent client connections calling health in a loop")
	flag.Parse()
	if err := run(*bin, *idle, *load, *peers, *clients); err != nil {
		fmt.Fprintln(os.Stderr, "rssbench:", err)
		os.Exit(1)
	}
}

type node struct {
	cmd  *exec.Cmd
	data string
}

func start(bin, data string, args ...string) (*node, error) {
	cmd := exec.Command(bin, append([]string{"node", "--data", data, "--listen", "127.0.0.1:0", "--mdns=false", "--log-level", "warn"}, args...)...)
	cmd.Stdout, cmd.Stderr = nil, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	n := &node{cmd: cmd, data: data}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := n.status(); err == nil {
			return n, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.stop()
	return nil, fmt.Errorf("node in %s did not answer", data)
}

type status struct {
	Fingerprint, Listen string
	Peers               []json.RawMessage
}

func (n *node) status() (status, error) {
	out, err := exec.Command(n.cmd.Path, "status", "--data", n.data, "--json").Output()
	var st status
	if err == nil {
		err = json.Unmarshal(out, &st)
	}
	return st, err
}

func (n *node) stop() {
	n.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(6 * time.Second):
		n.cmd.Process.Kill()
		<-done
	}
}

// mem reads VmRSS and VmHWM (KiB) of pid.
func mem(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var v int64
		switch {
		case strings.HasPrefix(sc.Text(), "VmRSS:"):
			fmt.Sscanf(strings.TrimPrefix(sc.Text(), "VmRSS:"), "%d", &v)
			rss = v
		case strings.HasPrefix(sc.Text(), "VmHWM:"):
			fmt.Sscanf(strings.TrimPrefix(sc.Text(), "VmHWM:"), "%d", &v)
			hwm = v
		}
	}
	return rss, hwm, sc.Err()
}

func report(what string, pid int, budget int) {
	rss, hwm, err := mem(pid)
	if err != nil {
		fmt.Printf("%-28s unreadable: %v\n", what, err)
		return
	}
	verdict := "OK"
	if hwm > int64(budget)<<10 {
		verdict = "OVER"
	}
	fmt.Printf("%-28s VmRSS %6.1f MiB  VmHWM %6.1f MiB  budget %d MiB  %s\n", what, float64(rss)/1024, float64(hwm)/1024, budget, verdict)
}

func run(bin string, idle, load time.Duration, npeers, nclients int) error {
	tmp, err := os.MkdirTemp("", "qpq-rssbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	m, err := start(bin, filepath.Join(tmp, "measured"))
	if err != nil {
		return err
	}
	defer m.stop()
	st, err := m.status()
	if err != nil {
		return err
	}
	pid := m.cmd.Process.Pid
	fmt.Printf("measuring pid %d (%s) on %s\n", pid, bin, st.Listen)
	time.Sleep(idle)
	report(fmt.Sprintf("idle after %v", idle), pid, idleBudgetMiB)

	var others []*node
	defer func() {
		for _, o := range others {
			o.stop()
		}
	}()
	for i := range npeers {
		o, err := start(bin, filepath.Join(tmp, fmt.Sprint("peer", i)), "--peer", st.Listen+"#"+st.Fingerprint)
		if err != nil {
			return err
		}
		others = append(others, o)
	}
	fp, err := identity.ParseFingerprint(st.Fingerprint)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), load)
	defer cancel()
	var calls atomic.Int64
	var wg sync.WaitGroup
	for range nclients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hammer(ctx, st.Listen, fp, &calls)
		}()
	}
	wg.Wait()
	after, _ := m.status()
	fmt.Printf("load: %d linked peers, %d client connections, %d health RPCs in %v (%.0f/s)\n",
		len(after.Peers), nclients, calls.Load(), load, float64(calls.Load())/load.Seconds())
	report(fmt.Sprintf("under load (%v)", load), pid, loadBudgetMiB)
	return nil
}

// hammer keeps one client connection calling health until ctx ends,
// reconnecting if the node drops it.
func hammer(ctx context.Context, addr string, fp identity.Fingerprint, calls *atomic.Int64) {
	for ctx.Err() == nil {
		d, err := link.NewDialer("127.0.0.1:0", nil)
		if err != nil {
			return
		}
		func() {
			defer d.Close()
			conn, err := d.Dial(ctx, addr, fp, link.ALPNClient)
			if err != nil {
				return
			}
			rc, boot, err := link.OpenStream(ctx, conn, capnp.Client{}, nil)
			if err != nil {
				return
			}
			defer rc.Close()
			n := schemas.Node(boot)
			defer n.Release()
			for ctx.Err() == nil {
				f, rel := n.Health(ctx, nil)
				_, err := f.Struct()
				rel()
				if err != nil {
					return
				}
				calls.Add(1)
			}
		}()
	}
}
