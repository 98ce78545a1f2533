package home

import (
	"errors"
	"testing"

	"github.com/quicproquo/qpq/node/e2e"
)

func TestJoinAJoinedChannelNeverRenames(t *testing.T) {
	h := Home{Dir: t.TempDir()}
	k, other := e2e.NewChannelKey(), e2e.NewChannelKey()
	if err := h.JoinChannel("town", k); err != nil {
		t.Fatal(err)
	}
	if err := h.JoinChannel("town", k); err != nil {
		t.Fatalf("joining again under the same name: %v", err)
	}
	var joined *JoinedError
	if err := h.JoinChannel("mytown", k); !errors.As(err, &joined) || joined.Name != "town" {
		t.Fatalf("join under a new name: %v, want a JoinedError naming town", err)
	}
	if cs, _ := h.Channels(); len(cs) != 1 || cs[0].Name != "town" {
		t.Fatalf("a refused join changed the channels: %+v", cs)
	}
	if err := h.RenameChannel(k, "mytown"); err != nil {
		t.Fatal(err)
	}
	if cs, _ := h.Channels(); len(cs) != 1 || cs[0].Name != "mytown" || !cs[0].Key.Equal(k) {
		t.Fatalf("after rename: %+v", cs)
	}
	if err := h.JoinChannel("mytown", other); !errors.Is(err, ErrChannelName) {
		t.Fatalf("another key under a taken name: %v", err)
	}
	if err := h.RenameChannel(other, "x"); err == nil {
		t.Fatal("renamed a channel that is not joined")
	}
	if err := h.JoinChannel("x", other); err != nil {
		t.Fatal(err)
	}
	if err := h.RenameChannel(other, "mytown"); !errors.Is(err, ErrChannelName) {
		t.Fatalf("rename onto a taken name: %v", err)
	}
	if cs, _ := h.Channels(); len(cs) != 2 {
		t.Fatalf("channels: %+v", cs)
	}
}
