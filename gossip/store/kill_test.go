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

func TestMain(m *testing.M) {
	if path := os.Getenv(killChildEnv); path != "" {
		os.Exit(putUntilKilled(path))
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
