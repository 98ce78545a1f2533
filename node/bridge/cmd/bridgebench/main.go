// Command bridgebench measures qpq-bridge's resident memory, natively:
// one bridge idle (no bridge link), then with two other bridges linked to
// it, beside a plain qpq node idle for as long (the anchor) when -qpq is
// given, and the two binaries' sizes. Every process it starts listens on
// 127.0.0.1 only and is stopped before it exits.
//
//	go run ./cmd/bridgebench -bin ../../build/bin/qpq-bridge_linux_amd64 [-qpq ../../build/bin/qpq_linux_amd64] [-idle 20s] [-linked 20s]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quicproquo/qpq/cross/procmem"
)

const secret = "bridgebench rendezvous secret"

func main() {
	bin := flag.String("bin", "qpq-bridge", "qpq-bridge binary to measure")
	qpq := flag.String("qpq", "", "qpq binary measured idle beside it (empty: skip)")
	idle := flag.Duration("idle", 20*time.Second, "how long the bridge idles before the idle reading")
	linked := flag.Duration("linked", 20*time.Second, "how long it runs with two bridge links before the second reading")
	flag.Parse()
	if err := run(*bin, *qpq, *idle, *linked); err != nil {
		fmt.Fprintln(os.Stderr, "bridgebench:", err)
		os.Exit(1)
	}
}

type ident struct{ fp, peer string }

func run(bin, qpq string, idle, linked time.Duration) error {
	tmp, err := os.MkdirTemp("", "qpq-bridgebench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	ids := map[string]ident{}
	for _, n := range []string{"a", "b", "c"} {
		out, err := exec.Command(bin, "id", "--data", filepath.Join(tmp, n)).Output()
		if err != nil {
			return fmt.Errorf("%s id: %w", bin, err)
		}
		var id ident
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) == 2 && f[0] == "fingerprint":
				id.fp = f[1]
			case len(f) == 3 && f[0] == "peer" && f[1] == "id":
				id.peer = f[2]
			}
		}
		if id.fp == "" || id.peer == "" {
			return fmt.Errorf("%s id printed %q", bin, out)
		}
		ids[n] = id
	}
	port, err := freeUDP()
	if err != nil {
		return err
	}
	aAddr := fmt.Sprintf("/ip4/127.0.0.1/udp/%d/quic-v1", port)
	var ups atomic.Int32
	a, err := start(bin, tmp, "a", []string{"--bridge-listen", aAddr, "--bridge-allow", ids["b"].fp, "--bridge-allow", ids["c"].fp}, &ups)
	if err != nil {
		return err
	}
	defer stop(a)
	var anchor *exec.Cmd
	if qpq != "" {
		anchor = exec.Command(qpq, "node", "--data", filepath.Join(tmp, "q"), "--listen", "127.0.0.1:0", "--mdns=false")
		if err := anchor.Start(); err != nil {
			return err
		}
		defer stop(anchor)
	}
	time.Sleep(idle)
	idleRSS, _, err := mem(a.Process.Pid)
	if err != nil {
		return err
	}
	var anchorRSS int64
	if anchor != nil {
		if anchorRSS, _, err = mem(anchor.Process.Pid); err != nil {
			return err
		}
	}
	for _, n := range []string{"b", "c"} {
		c, err := start(bin, tmp, n, []string{"--bridge-listen", "/ip4/127.0.0.1/udp/0/quic-v1", "--bridge-allow", ids["a"].fp,
			"--bridge-peer", aAddr + "/p2p/" + ids["a"].peer}, nil)
		if err != nil {
			return err
		}
		defer stop(c)
	}
	deadline := time.Now().Add(60 * time.Second)
	for ups.Load() < 2 {
		if time.Now().After(deadline) {
			return fmt.Errorf("bridge a has %d bridge links after 60 s, want 2", ups.Load())
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(linked)
	linkedRSS, hwm, err := mem(a.Process.Pid)
	if err != nil {
		return err
	}
	mib := func(kib int64) float64 { return float64(kib) / 1024 }
	size := func(p string) float64 {
		st, err := os.Stat(p)
		if err != nil {
			return 0
		}
		return float64(st.Size()) / (1 << 20)
	}
	fmt.Printf("bridge binary   %s %.1f MiB", filepath.Base(bin), size(bin))
	if qpq != "" {
		fmt.Printf("  (router %s %.1f MiB)", filepath.Base(qpq), size(qpq))
	}
	fmt.Println()
	fmt.Printf("bridge RSS      idle %.1f MiB after %v; with 2 bridge links %.1f MiB after %v (peak %.1f MiB)", mib(idleRSS), idle, mib(linkedRSS), linked, mib(hwm))
	if anchor != nil {
		fmt.Printf("; qpq node idle %.1f MiB (anchor)", mib(anchorRSS))
	}
	fmt.Println()
	return nil
}

// start runs bridge name of island name on 127.0.0.1 with extra flags;
// ups, when not nil, counts its "bridge link up" log lines.
func start(bin, tmp, name string, extra []string, ups *atomic.Int32) (*exec.Cmd, error) {
	args := []string{"--data", filepath.Join(tmp, name), "--listen", "127.0.0.1:0", "--mdns=false",
		"--bridge-island", "island-" + name, "--bridge-secret", secret}
	cmd := exec.Command(bin, append(args, extra...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if ups != nil && strings.Contains(sc.Text(), "bridge link up") {
				ups.Add(1)
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	return cmd, nil
}

func stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
	}
}

func freeUDP() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// mem reads VmRSS and VmHWM (KiB) of pid.
func mem(pid int) (rss, hwm int64, err error) { return procmem.Read(pid) }
