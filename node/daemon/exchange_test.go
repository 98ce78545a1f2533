package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The sequence rises by one per call, lives in a 0600 file, and is
// replaced by rename: a reader holding the old file still sees the old
// number whole (an in-place rewrite truncates it under the reader),
// and no temporary file is left behind.
func TestNextSeqRisesAndReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, seqFile)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	log := slog.New(slog.DiscardHandler)
	for want := uint64(1); want <= 3; want++ {
		got, err := nextSeq(path, now, log)
		if err != nil || got != want {
			t.Fatalf("nextSeq = %d, %v; want %d", got, err, want)
		}
	}
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if got, err := nextSeq(path, now, log); err != nil || got != 4 {
		t.Fatalf("nextSeq = %d, %v; want 4", got, err)
	}
	b := make([]byte, 16)
	n, _ := old.Read(b)
	if string(b[:n]) != "3\n" {
		t.Errorf("the file open before the write now reads %q, want %q: it was rewritten in place", b[:n], "3\n")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("data dir holds %v, want only %s", names, seqFile)
	}
}

// A damaged sequence file (torn to nothing, or garbage) never makes the
// node publish a lower number than before, and says so.
func TestNextSeqDamagedFileNeverGoesBack(t *testing.T) {
	for _, damaged := range []string{"", "12x\n", "\x00\x00\x00"} {
		dir := t.TempDir()
		path := filepath.Join(dir, seqFile)
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		var warned atomic.Int64
		log := slog.New(countingHandler{substr: "descriptor sequence file is damaged", n: &warned})
		if err := os.WriteFile(path, []byte("987654\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		before, err := nextSeq(path, now, log)
		if err != nil || before != 987655 {
			t.Fatalf("nextSeq = %d, %v; want 987655", before, err)
		}
		if err := os.WriteFile(path, []byte(damaged), 0o600); err != nil {
			t.Fatal(err)
		}
		after, err := nextSeq(path, now, log)
		if err != nil {
			t.Fatalf("damaged %q: %v", damaged, err)
		}
		if after <= before {
			t.Errorf("damaged %q: next sequence %d, not above the %d published before", damaged, after, before)
		}
		if warned.Load() != 1 {
			t.Errorf("damaged %q: %d warnings, want 1", damaged, warned.Load())
		}
		if b, err := os.ReadFile(path + ".bad"); err != nil || string(b) != damaged {
			t.Errorf("damaged %q: kept aside as %q, %v", damaged, b, err)
		}
		// The count goes on from there.
		b, _ := os.ReadFile(path)
		if got, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); got != after {
			t.Errorf("damaged %q: file holds %q, want %d", damaged, b, after)
		}
		if next, err := nextSeq(path, now, log); err != nil || next != after+1 {
			t.Errorf("damaged %q: then %d, %v; want %d", damaged, next, err, after+1)
		}
	}
}
