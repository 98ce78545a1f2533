// Command rssbench measures a qpq node's resident memory, natively: idle
// after a settling period, then under a load of node links and client RPCs,
// then (a second node) holding many stored envelopes with many links up.
// It prints VmRSS and VmHWM from /proc beside DESIGN's RAM budget (and,
// for the stored node, issue 12's goal), with the anonymous and
// file-mapped parts of VmRSS. Every node it starts listens on 127.0.0.1
// and is stopped before it exits.
//
//	go run ./cross/cmd/rssbench -bin ./qpq [-idle 60s] [-load 30s] [-decoy-rate 10] [-decoy-for 30s] [-stored 10000] [-stored-links 16] [-stored-for 30s]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/cross/procmem"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/schemas"
)

const (
	idleBudgetMiB = 16
	loadBudgetMiB = 48
	// storedGoalMiB is issue 12's goal for a node holding 10k stored
	// envelopes with 16 links.
	storedGoalMiB = 64
	// storedMaxBytes is the stored node's store size (and its peers'):
	// room for every envelope within each source's share.
	storedMaxBytes = 64 << 20
	storedSources  = 16 // the stored envelopes are spread over this many sources' quotas
)

func main() {
	bin := flag.String("bin", "./qpq", "qpq binary to measure")
	idle := flag.Duration("idle", 60*time.Second, "how long the node idles before the idle reading")
	load := flag.Duration("load", 30*time.Second, "how long the load runs")
	peers := flag.Int("peers", 8, "node processes linked to the measured node during the load")
	clients := flag.Int("clients", 16, "concurrent client connections calling health in a loop")
	stored := flag.Int("stored", 10000, "envelopes held by the store of the second measured node (0: skip it)")
	storedLinks := flag.Int("stored-links", 16, "node processes linked to the second measured node")
	storedFor := flag.Duration("stored-for", 30*time.Second, "how long the second node is measured once its links are up")
	decoyRate := flag.Float64("decoy-rate", 10, "cover cells a second on each link of a third measured node (0: skip it)")
	decoyFor := flag.Duration("decoy-for", 30*time.Second, "how long the decoy node runs with its links before it is read")
	memLimit := flag.String("memlimit", "48MiB", "GOMEMLIMIT of a second run of the stored node, as the OpenWrt package sets it (uci mem_limit 48M); empty: skip it")
	flag.Parse()
	tmp, err := os.MkdirTemp("", "qpq-rssbench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "rssbench:", err)
		os.Exit(1)
	}
	err = run(*bin, tmp, *idle, *load, *peers, *clients)
	if err == nil && *decoyRate > 0 {
		err = runDecoys(*bin, tmp, *decoyRate, *peers, *decoyFor)
	}
	if err == nil && *stored > 0 {
		err = runStored(*bin, tmp, *stored, *storedLinks, *storedFor, "")
	}
	if err == nil && *stored > 0 && *memLimit != "" {
		err = runStored(*bin, tmp, *stored, *storedLinks, *storedFor, *memLimit)
	}
	os.RemoveAll(tmp)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rssbench:", err)
		os.Exit(1)
	}
}

type node struct {
	cmd  *exec.Cmd
	data string
}

func start(bin, data string, args ...string) (*node, error) {
	return startEnv(bin, data, nil, args...)
}

// startEnv is start with extra environment variables for the node.
func startEnv(bin, data string, env []string, args ...string) (*node, error) {
	cmd := exec.Command(bin, append([]string{"node", "--data", data, "--listen", "127.0.0.1:0", "--mdns=false", "--log-level", "warn"}, args...)...)
	cmd.Stdout, cmd.Stderr = nil, os.Stderr
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
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
	Store               struct{ Envelopes int64 }
	Cells               struct {
		Links         int
		SentCover     int64 `json:"sent_cover"`
		ReceivedCover int64 `json:"received_cover"`
	}
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
func mem(pid int) (rss, hwm int64, err error) { return procmem.Read(pid) }

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

func run(bin, tmp string, idle, load time.Duration, npeers, nclients int) error {
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
