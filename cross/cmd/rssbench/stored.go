package main

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/node/config"
	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/schemas"
)

// runStored measures a node whose store holds n envelopes (DMs of a
// sealed 256-byte message's size, to random mailboxes) while links
// neighbours are linked to it and catch up from it, for settle: the
// mapped store file is most of what such a node holds. The store file is
// written beforehand by the store package itself, on tmpfs when there is
// one (10k durable commits on disk would take minutes), and copied into
// the node's data directory, on the temporary directory's filesystem.
// The neighbours keep their stores on tmpfs when there is one: only the
// measured node's memory matters, not the neighbours' writes. Each
// neighbour has a mesh domain of its own, so they link to the measured
// node only and not, by peer exchange, to each other.
func runStored(bin, tmp string, n, links int, settle time.Duration, memLimit string) error {
	scratch := tmp
	if dir, err := os.MkdirTemp("/dev/shm", "qpq-rssbench-"); err == nil {
		scratch = dir
		defer os.RemoveAll(dir)
	}
	data := filepath.Join(tmp, "stored"+memLimit)
	label, env := "", []string(nil)
	if memLimit != "" {
		// GOMEMLIMIT set here wins over none; the package's init script
		// sets it from uci mem_limit.
		label, env = ", GOMEMLIMIT "+memLimit, []string{"GOMEMLIMIT=" + memLimit}
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	built := filepath.Join(scratch, "built.db")
	t0 := time.Now()
	if err := fillStore(built, n); err != nil {
		return err
	}
	if err := copyFile(built, filepath.Join(data, config.StoreName)); err != nil {
		return err
	}
	fi, err := os.Stat(filepath.Join(data, config.StoreName))
	if err != nil {
		return err
	}
	fmt.Printf("stored node%s: store of %d envelopes, %.1f MiB file, written in %v\n", label, n, float64(fi.Size())/(1<<20), time.Since(t0).Round(time.Millisecond))

	maxBytes := fmt.Sprint(storedMaxBytes)
	m, err := startEnv(bin, data, env, "--max-links", fmt.Sprint(links), "--store-max-bytes", maxBytes)
	if err != nil {
		return err
	}
	defer m.stop()
	st, err := m.status()
	if err != nil {
		return err
	}
	pid := m.cmd.Process.Pid
	report(fmt.Sprintf("stored (%d env)%s, no links", st.Store.Envelopes, label), pid, storedGoalMiB)
	var others []*node
	defer func() {
		for _, o := range others {
			o.stop()
		}
	}()
	for i := range links {
		o, err := start(bin, filepath.Join(scratch, fmt.Sprint("npeer", memLimit, i)), "--peer", st.Listen+"#"+st.Fingerprint,
			"--domain", fmt.Sprint("rssbench-", i), "--store-max-bytes", maxBytes)
		if err != nil {
			return err
		}
		others = append(others, o)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err = m.status()
		if err == nil && len(st.Peers) >= links || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	up := len(st.Peers)
	// The links' catch-up is what the node does with them: sample
	// through it, and keep the largest reading.
	var peak int64
	for end := time.Now().Add(settle); time.Now().Before(end); time.Sleep(time.Second) {
		if rss, _, err := mem(pid); err == nil {
			peak = max(peak, rss)
		}
	}
	st, _ = m.status()
	fmt.Printf("stored node: %d links up (of %d), %d envelopes held, measured %v after they linked, largest VmRSS sampled %.1f MiB\n",
		up, links, st.Store.Envelopes, settle, float64(peak)/1024)
	report(fmt.Sprintf("stored (%d env)%s, %d links", n, label, up), pid, storedGoalMiB)
	parts, err := rssParts(pid)
	if err != nil {
		return err
	}
	fmt.Printf("%-28s %s\n", "", parts)
	return nil
}

// fillStore writes a store file at path holding n DM envelopes, spread
// over storedSources sources so that no source's share refuses one.
func fillStore(path string, n int) error {
	st, err := store.Open(path, store.Options{MaxBytes: storedMaxBytes})
	if err != nil {
		return fmt.Errorf("store for the stored node: %w", err)
	}
	for i := range n {
		dest, tag := make([]byte, 32), make([]byte, 32)
		payload := make([]byte, e2e.DMPayloadSize(256))
		rand.Read(dest)
		rand.Read(tag)
		rand.Read(payload)
		e := gossip.Envelope{Kind: schemas.Envelope_Kind_dm, Destination: dest, ReceiptTag: tag,
			Payload: payload, TTLSeconds: 7 * 24 * 3600, HopLimit: 8}
		e.ID = gossip.ComputeID(e.Kind, e.Destination, e.ReceiptTag, e.Payload)
		if added, err := st.Put(e, fmt.Sprint("rssbench ", i%storedSources)); err != nil || !added {
			st.Close()
			return fmt.Errorf("store for the stored node: envelope %d: added=%v: %w", i, added, err)
		}
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("store for the stored node: %w", err)
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", from, err)
	}
	return out.Close()
}

// rssParts reads VmRSS's parts from /proc/pid/status: anonymous memory,
// mapped files (the store) and shared memory.
func rssParts(pid int) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	var parts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		for _, k := range []string{"RssAnon:", "RssFile:", "RssShmem:"} {
			if v, ok := strings.CutPrefix(sc.Text(), k); ok {
				var kib int64
				fmt.Sscanf(v, "%d", &kib)
				parts = append(parts, fmt.Sprintf("%s %.1f MiB", strings.TrimSuffix(k, ":"), float64(kib)/1024))
			}
		}
	}
	return strings.Join(parts, "  "), sc.Err()
}
