package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"

	"github.com/quicproquo/qpq/mesh/testkit"
)

func TestDialToASilentAddressSaysNoNodeAnsweredAndShowsItIsTrying(t *testing.T) {
	testkit.LeakCheck(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	slow := 0
	_, err = DialNotify(ctx, addr, identity.Fingerprint{}, 100*time.Millisecond, func() { slow++ })
	if !errors.Is(err, ErrNoNode) || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "qpq node") {
		t.Fatalf("dial to nothing: %v", err)
	}
	if slow != 1 {
		t.Fatalf("slow notice called %d times, want once", slow)
	}
}

func TestQuotaRefusalIsNodeFull(t *testing.T) {
	remote := errors.New("qpq.capnp:Node.enqueue: enqueue: store: put 11: source over its store quota: the source holds 53529 bytes")
	err := enqueueError("127.0.0.1:7443", remote)
	if !errors.Is(err, ErrNodeFull) || !strings.Contains(err.Error(), "retry later or use another node") || !strings.Contains(err.Error(), "from you") {
		t.Fatalf("source quota: %v", err)
	}
	err = enqueueError("n", errors.New("mailbox over its store quota"))
	if !errors.Is(err, ErrNodeFull) || !strings.Contains(err.Error(), "recipient") {
		t.Fatalf("mailbox quota: %v", err)
	}
	if other := errors.New("bad envelope"); enqueueError("n", other) != other {
		t.Fatal("other refusals must pass unchanged")
	}
}

func TestBackoffDoublesWithJitterUpToItsCap(t *testing.T) {
	var b Backoff
	want := 250 * time.Millisecond
	for i := 0; i < 12; i++ {
		d := b.Next()
		if d < want/2 || d > want {
			t.Fatalf("attempt %d waited %v, want between %v and %v", i, d, want/2, want)
		}
		if want *= 2; want > 30*time.Second {
			want = 30 * time.Second
		}
	}
	b.Reset()
	if d := b.Next(); d > 250*time.Millisecond {
		t.Fatalf("after Reset: %v", d)
	}
}
