package store

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/quicproquo/qpq/gossip"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

// killChildEnv names the store file a re-executed test binary fills
// until it is killed (see TestKill9Durability).
const killChildEnv = "QPQ_STORE_TEST_KILL_CHILD"

// killBatchChildEnv names the store file a re-executed test binary fills
// with batches until it is killed (see TestKill9DurabilityBatched).
const killBatchChildEnv = "QPQ_STORE_TEST_KILL_BATCH_CHILD"

func TestMain(m *testing.M) {
	if path := os.Getenv(killChildEnv); path != "" {
		os.Exit(putUntilKilled(path))
	}
	if path := os.Getenv(killBatchChildEnv); path != "" {
		os.Exit(applyUntilKilled(path))
	}
	os.Exit(m.Run())
}

// putUntilKilled puts envelopes one by one and prints each id once Put
// has returned: the ids printed are the ones acknowledged.
func putUntilKilled(path string) int {
	s, err := Open(path, Options{MaxBytes: 1 << 30, MaxPerSource: 1 << 30, MaxPerMailbox: 1 << 30})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for range 1_000_000 {
		e := gossiptest.DM(nil, nil, 3600, 1)
		if added, err := s.Put(e, "burst"); err != nil || !added {
			fmt.Fprintln(os.Stderr, "put:", added, err)
			return 1
		}
		if _, err := fmt.Fprintln(os.Stdout, e.ID.String()); err != nil {
			return 1
		}
	}
	return 0
}

func TestKill9Durability(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), killChildEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	const killAt = 300
	var acked []gossip.ID
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var id gossip.ID
		if len(sc.Bytes()) != 2*gossip.IDLen {
			t.Fatalf("child printed %q", sc.Text())
		}
		if _, err := hex.Decode(id[:], sc.Bytes()); err != nil {
			t.Fatalf("child printed %q: %v", sc.Text(), err)
		}
		acked = append(acked, id)
		if len(acked) == killAt {
			// Mid-burst; ids already in the pipe still count as acknowledged.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed: %v\n%s", err, stderr.Bytes())
	}
	if len(acked) < killAt {
		t.Fatalf("child acknowledged only %d puts: %s", len(acked), stderr.Bytes())
	}

	checkFile(t, path)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen after kill -9: %v", err)
	}
	defer func() {
		s.Close()
		checkFile(t, path)
	}()
	for _, id := range acked {
		if _, ok, err := s.Get(id); !ok || err != nil {
			t.Fatalf("acknowledged envelope %v lost: ok=%v err=%v", id, ok, err)
		}
	}
	// At most one put can have committed without being printed.
	if st := s.Stats(); st.Envelopes < int64(len(acked)) || st.Envelopes > int64(len(acked))+1 {
		t.Fatalf("%d acknowledged, %d stored", len(acked), st.Envelopes)
	}
	t.Logf("%d puts acknowledged before the kill, all present", len(acked))
}

// killBatch is the ops of one batch in applyUntilKilled: puts, then a
// receipt tag deletion of one envelope of the batch before.
const killBatch = 32

// applyUntilKilled applies batches of killBatch-1 puts and one
// DeleteTag of the first envelope of the previous batch. Before each
// Apply it prints "d <id>" for the envelope the batch is to delete;
// once Apply has returned nil, "+ <id>" for each envelope added and
// "- <id>" for the one deleted, all in one write so a kill never splits
// a batch's lines.
func applyUntilKilled(path string) int {
	s, err := Open(path, Options{MaxBytes: 1 << 30, MaxPerSource: 1 << 30, MaxPerMailbox: 1 << 30})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var prev *gossip.Envelope
	for range 100_000 {
		var ops []Op
		var es []gossip.Envelope
		for range killBatch - 1 {
			e := gossiptest.DM(nil, nil, 3600, 1)
			es = append(es, e)
			ops = append(ops, Op{Put: &e, Source: "burst"})
		}
		if prev != nil {
			ops = append(ops, Op{DeleteTag: prev.ReceiptTag})
			if _, err := fmt.Fprintf(os.Stdout, "d %v\n", prev.ID); err != nil {
				return 1
			}
		}
		res, err := s.Apply(ops)
		if err != nil {
			fmt.Fprintln(os.Stderr, "apply:", err)
			return 1
		}
		var out bytes.Buffer
		for i, e := range es {
			if !res[i].Added || res[i].Err != nil {
				fmt.Fprintln(os.Stderr, "put:", res[i])
				return 1
			}
			fmt.Fprintf(&out, "+ %v\n", e.ID)
		}
		if prev != nil {
			if r := res[len(es)]; r.Deleted != 1 || r.Err != nil {
				fmt.Fprintln(os.Stderr, "delete tag:", r)
				return 1
			}
			fmt.Fprintf(&out, "- %v\n", prev.ID)
		}
		if _, err := os.Stdout.Write(out.Bytes()); err != nil {
			return 1
		}
		prev = &es[0]
	}
	return 0
}

// TestKill9DurabilityBatched kills a process in the middle of a burst of
// batched Apply calls: every envelope of a batch whose Apply returned is
// there after reopen, every one such a batch deleted is gone (and
// tombstoned), and the file passes Open's check and the store's own.
func TestKill9DurabilityBatched(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), killBatchChildEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	const killAt = 300
	added := map[gossip.ID]bool{}
	deleted := map[gossip.ID]bool{}
	doomed := map[gossip.ID]bool{} // named by a batch that may have committed unacknowledged
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Bytes()
		var id gossip.ID
		if len(line) != 2+2*gossip.IDLen || line[1] != ' ' {
			t.Fatalf("child printed %q", line)
		}
		if _, err := hex.Decode(id[:], line[2:]); err != nil {
			t.Fatalf("child printed %q: %v", line, err)
		}
		switch line[0] {
		case '+':
			added[id] = true
		case '-':
			deleted[id] = true
			delete(doomed, id)
		case 'd':
			doomed[id] = true
		default:
			t.Fatalf("child printed %q", line)
		}
		if len(added) == killAt {
			// Mid-burst; lines already in the pipe still count as acknowledged.
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed: %v\n%s", err, stderr.Bytes())
	}
	if len(added) < killAt || len(deleted) == 0 {
		t.Fatalf("child acknowledged only %d puts and %d deletes: %s", len(added), len(deleted), stderr.Bytes())
	}

	checkFile(t, path)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen after kill -9: %v", err)
	}
	defer func() {
		s.Close()
		checkFile(t, path)
	}()
	present := 0
	for id := range added {
		_, ok, err := s.Get(id)
		switch {
		case err != nil:
			t.Fatalf("get %v: %v", id, err)
		case deleted[id]:
			if ok || !s.Has(id) {
				t.Fatalf("envelope %v, deleted by an acknowledged batch, is back: stored=%v tombstoned=%v", id, ok, s.Has(id))
			}
		case doomed[id]:
			// The batch deleting it may or may not have committed.
		case !ok:
			t.Fatalf("acknowledged envelope %v lost", id)
		default:
			present++
		}
	}
	// At most one batch can have committed without being acknowledged.
	if st := s.Stats(); st.Envelopes < int64(present) || st.Envelopes > int64(present+len(doomed)+killBatch-1) {
		t.Fatalf("%d acknowledged and held, %d in doubt, %d stored", present, len(doomed), st.Envelopes)
	}
	t.Logf("%d puts and %d deletes in batches acknowledged before the kill, all applied", len(added), len(deleted))
}
