package store

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

// logBuffer collects what a store logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// flipInFile flips a bit of every copy of needle in the closed file at
// path: damage bbolt cannot see, since it checksums only its meta pages.
func flipInFile(t *testing.T, path string, needle []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := bytes.Index(b, needle); i >= 0; {
		b[i+len(needle)/2] ^= 0x10
		n++
		j := bytes.Index(b[i+1:], needle)
		if j < 0 {
			break
		}
		i += 1 + j
	}
	if n == 0 {
		t.Fatal("the bytes to damage are not in the file")
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestDamagedRecordSkippedRestDelivered(t *testing.T) {
	var logs logBuffer
	s := openTest(t, Options{Logger: logs.logger()})
	user := gossiptest.Random(gossip.DestLen)
	var mine []gossip.Envelope
	for range 4 {
		e := gossiptest.DM(user, nil, 3600, 2)
		s.mustPut(e, "link a")
		mine = append(mine, e)
	}
	other := gossiptest.DM(nil, nil, 3600, 1)
	s.mustPut(other, "link a")
	bad := mine[1]

	// A bit flips in the second one's payload while the node is down.
	if err := s.Store.Close(); err != nil {
		t.Fatal(err)
	}
	flipInFile(t, s.path, bad.Payload[100:140])
	s.Store = nil
	s.reopen() // Open does not read records' contents: it still opens

	got, err := s.Mailbox(user, 0)
	if err != nil {
		t.Fatalf("mailbox with one damaged record: %v", err)
	}
	want := []gossip.Envelope{mine[0], mine[2], mine[3]}
	if len(got) != len(want) {
		t.Fatalf("mailbox returned %d envelopes, want the %d sound ones", len(got), len(want))
	}
	for i := range want {
		if got[i].ID != want[i].ID || !bytes.Equal(got[i].Payload, want[i].Payload) {
			t.Fatalf("envelope %d: got %v, want %v", i, got[i].ID, want[i].ID)
		}
	}
	st := s.Stats()
	if st.Damaged != 1 || st.Envelopes != 4 {
		t.Fatalf("after the damaged record: damaged %d envelopes %d, want 1 and 4", st.Damaged, st.Envelopes)
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "damaged") ||
		!strings.Contains(l, fmt.Sprintf("%x", bad.ID[:])) {
		t.Fatalf("the damaged record was not logged with its id:\n%s", l)
	}
	// It is gone for good: fetching again finds the same three, and a
	// sound copy from a neighbour is taken in again.
	if again, err := s.Mailbox(user, 0); err != nil || len(again) != 3 {
		t.Fatalf("second fetch: %d %v", len(again), err)
	}
	if _, ok, err := s.Get(bad.ID); ok || err != nil {
		t.Fatalf("get of the removed record: ok=%v err=%v", ok, err)
	}
	s.mustPut(bad, "link b")
	if all, err := s.Mailbox(user, 0); err != nil || len(all) != 4 {
		t.Fatalf("after the sound copy came again: %d %v", len(all), err)
	}
	s.assertHeld(other)
	if st := s.Stats(); st.Damaged != 1 {
		t.Fatalf("damaged counted %d times", st.Damaged)
	}
}

func TestUndecodableRecordSkipped(t *testing.T) {
	// A record whose body no longer parses at all: removed as far as it
	// can be named; its leftover receipt tag entry is harmless.
	s := openTest(t, Options{})
	user := gossiptest.Random(gossip.DestLen)
	a, b := gossiptest.DM(user, nil, 3600, 1), gossiptest.DM(user, nil, 3600, 1)
	s.mustPut(a, "link a")
	s.mustPut(b, "link a")
	if err := s.Store.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(s.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		env := tx.Bucket(bucketEnv)
		rec := clone(env.Get(a.ID[:]))
		for i := recHeaderLen; i < len(rec); i++ {
			rec[i] = 0xff
		}
		return env.Put(a.ID[:], rec)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s.Store = nil
	s.reopen()
	got, err := s.Mailbox(user, 0)
	if err != nil || len(got) != 1 || got[0].ID != b.ID {
		t.Fatalf("mailbox: %d envelopes, %v; want only the sound one", len(got), err)
	}
	if st := s.Stats(); st.Damaged != 1 || st.Envelopes != 1 {
		t.Fatalf("stats: %+v", st)
	}
	if n, err := s.DeleteByReceiptTag(a.ReceiptTag); n != 0 || err != nil {
		t.Fatalf("receipt for the removed record: %d %v", n, err)
	}
	if n, err := s.DeleteByReceiptTag(b.ReceiptTag); n != 1 || err != nil {
		t.Fatalf("receipt for the sound record: %d %v", n, err)
	}
}

func TestOpenEmptyFileWarns(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "store.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var logs logBuffer
	s, err := Open(empty, Options{Logger: logs.logger()})
	if err != nil {
		t.Fatalf("open a 0-byte file: %v", err)
	}
	s.Close()
	l := logs.String()
	if !strings.Contains(l, "level=WARN") || !strings.Contains(l, "empty") || !strings.Contains(l, empty) {
		t.Fatalf("a 0-byte store file opened without a warning naming it:\n%s", l)
	}
	// The normal first start, with no file, says nothing of the kind;
	// nor does reopening the file now that it holds a store.
	for _, path := range []string{filepath.Join(dir, "new.db"), empty} {
		var quiet logBuffer
		s, err := Open(path, Options{Logger: quiet.logger()})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if l := quiet.String(); strings.Contains(l, "WARN") || strings.Contains(l, "ERROR") {
			t.Fatalf("open of %s warned:\n%s", path, l)
		}
	}
}
