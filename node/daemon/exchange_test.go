package daemon

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/neighbours"

	"github.com/quicproquo/qpq/mesh/testkit"
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

// refuser is a UDP socket that answers any QUIC Initial with a Version
// Negotiation offering only a version nobody speaks, so a dial to it
// fails at once; it records whether it was dialled.
type refuser struct {
	conn   *net.UDPConn
	hit    atomic.Bool
	closed chan struct{}
}

func newRefuser(t *testing.T) *refuser {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &refuser{conn: c, closed: make(chan struct{})}
	go func() {
		defer close(r.closed)
		b := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(b)
			if err != nil {
				return
			}
			r.hit.Store(true)
			if n < 7 || b[0]&0x80 == 0 {
				continue
			}
			dl := int(b[5])
			if n < 7+dl || n < 7+dl+int(b[6+dl]) {
				continue
			}
			dcid := b[6 : 6+dl]
			scid := b[7+dl : 7+dl+int(b[6+dl])]
			vn := []byte{0x80, 0, 0, 0, 0, byte(len(scid))}
			vn = append(vn, scid...)
			vn = append(vn, byte(len(dcid)))
			vn = append(vn, dcid...)
			vn = append(vn, 0x1a, 0x2a, 0x3a, 0x4a)
			c.WriteToUDP(vn, from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-r.closed })
	return r
}

// A neighbour pushing signed descriptors of identities it made up, each
// naming an address it chose (issue 9: 24 dials in 50 s), makes the node
// dial only the node-wide budget of never-reached addresses; once those
// dials have failed, planning again dials nothing more.
func TestMadeUpDescriptorsDialOnlyTheBudget(t *testing.T) {
	testkit.LeakCheck(t)
	d := startDaemon(t, 8, nil, nil)
	var targets []*refuser
	for i := range 30 {
		r := newRefuser(t)
		targets = append(targets, r)
		id, err := identity.NewNode()
		if err != nil {
			t.Fatal(err)
		}
		signed, err := descriptor.Sign(id, []string{r.conn.LocalAddr().String()}, d.cfg.Domain, uint64(i+1), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		d.onDescriptorFrom(signed, identity.Fingerprint{})
	}
	hits := func() int {
		n := 0
		for _, r := range targets {
			if r.hit.Load() {
				n++
			}
		}
		return n
	}
	idle := func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.dialing) == 0
	}
	// Each dial fails at the version negotiation at once (20 ms in all
	// here); the bound is for a loaded CI machine, where 10 s once ran out.
	testkit.WaitFor(t, 30*time.Second, "the budgeted dials to be made and to fail", func() bool {
		return hits() >= neighbours.NewAddrBurstAll && idle()
	})
	d.selectOnce()
	if !idle() {
		t.Errorf("with the budget spent, a new plan still dials a made-up node")
	}
	// The node-wide budget earns one more every NewAddrEveryAll.
	if n := hits(); n > neighbours.NewAddrBurstAll+1 {
		t.Errorf("made-up descriptors made the node dial %d addresses, want at most %d", n, neighbours.NewAddrBurstAll+1)
	}
}
