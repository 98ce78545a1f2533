package history

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicproquo/qpq/node/e2e"
)

func open(t *testing.T, path string, u *e2e.User, limit int) *Store {
	t.Helper()
	s, err := Open(path, u, Config{Limit: limit})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func msg(i int, peer *e2e.User) Message {
	return Message{ID: fmt.Sprintf("%064x", i), Dir: In, Kind: "dm", Peer: peer.Fingerprint(), From: peer.Fingerprint(),
		Body: fmt.Sprintf("message %d", i), SentAt: time.Unix(int64(i), 0).UTC()}
}

// Past the bound the oldest messages go first; reopening with a smaller
// bound trims; 0 keeps none.
func TestBoundDropsOldestAndZeroKeepsNone(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	u, alice := e2e.NewUser(), e2e.NewUser()
	s := open(t, path, u, 3)
	for i := 1; i <= 5; i++ {
		if err := s.Append(msg(i, alice)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.List(Query{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Body != "message 3" || got[2].Body != "message 5" {
		t.Fatalf("kept %v, want messages 3..5", bodies(got))
	}
	if got, _ := open(t, path, u, 2).List(Query{}); len(got) != 2 || got[0].Body != "message 4" {
		t.Fatalf("reopened with 2: %v", bodies(got))
	}
	zero := open(t, path, u, 0)
	zero.Append(msg(6, alice))
	if got, _ := zero.List(Query{}); len(got) != 0 {
		t.Fatalf("limit 0 kept %v", bodies(got))
	}
}

func bodies(ms []Message) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.Body)
	}
	return out
}

// Queries select one peer's DMs or one channel, the newest N.
func TestQueryPeerChannelLast(t *testing.T) {
	u, alice, bob := e2e.NewUser(), e2e.NewUser(), e2e.NewUser()
	s := open(t, filepath.Join(t.TempDir(), FileName), u, 100)
	s.Append(msg(1, alice), msg(2, bob), msg(3, alice), msg(4, alice))
	s.Append(Message{Dir: In, Kind: "broadcast", Channel: "ops", From: bob.Fingerprint(), Body: "on ops"})
	if got, _ := s.List(Query{Peer: alice.Fingerprint(), Last: 2}); len(got) != 2 || got[0].Body != "message 3" || got[1].Body != "message 4" {
		t.Fatalf("alice's last 2: %v", bodies(got))
	}
	if got, _ := s.List(Query{Channel: "ops"}); len(got) != 1 || got[0].Body != "on ops" {
		t.Fatalf("ops: %v", bodies(got))
	}
	if got, _ := s.List(Query{Peer: bob.Fingerprint()}); len(got) != 1 {
		t.Fatalf("bob's DMs (not his broadcast): %v", bodies(got))
	}
}

// Without the key the file shows nothing of the messages; another
// identity cannot open it; state blobs round-trip sealed.
func TestEncryptedAtRest(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	u, alice := e2e.NewUser(), e2e.NewUser()
	s := open(t, path, u, 10)
	m := msg(1, alice)
	m.Body = "the secret plan is at the water tower"
	s.Append(m)
	if err := s.SetState("gaps", []byte("tracker state 42")); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	fp := alice.Fingerprint()
	for what, b := range map[string][]byte{"body": []byte(m.Body), "state": []byte("tracker state"), "peer": fp[:], "peer text": []byte(fp.String()), "state name": []byte("gaps")} {
		if bytes.Contains(raw, b) {
			t.Errorf("the file shows the %s", what)
		}
	}
	if b, err := s.State("gaps"); err != nil || string(b) != "tracker state 42" {
		t.Fatalf("state: %q %v", b, err)
	}
	if b, err := s.State("none"); err != nil || b != nil {
		t.Fatalf("missing state: %q %v", b, err)
	}
	if _, err := Open(path, e2e.NewUser(), Config{Limit: 10}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("another identity: %v", err)
	}
}

func TestLimitFrom(t *testing.T) {
	env := func(v string) func(string) string { return func(string) string { return v } }
	for _, c := range []struct {
		flag, env string
		want      int
		bad       bool
	}{{"", "", UseSetting, false}, {"5", "7", 5, false}, {"", "0", 0, false}, {"-1", "", 0, true}, {"", "x", 0, true}} {
		n, err := LimitFrom(c.flag, env(c.env))
		if (err != nil) != c.bad || (!c.bad && n != c.want) {
			t.Errorf("LimitFrom(%q, %q) = %d, %v", c.flag, c.env, n, err)
		}
	}
}

// The limit set once is what later opens use, unless given.
func TestSetLimitPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), FileName)
	u, alice := e2e.NewUser(), e2e.NewUser()
	s := open(t, path, u, UseSetting)
	if s.Limit() != DefaultLimit {
		t.Fatalf("default %d", s.Limit())
	}
	s.Append(msg(1, alice), msg(2, alice), msg(3, alice))
	if err := s.SetLimit(2); err != nil {
		t.Fatal(err)
	}
	again := open(t, path, u, UseSetting)
	if again.Limit() != 2 {
		t.Fatalf("after SetLimit(2): %d", again.Limit())
	}
	if got, _ := again.List(Query{}); len(got) != 2 || got[0].Body != "message 2" {
		t.Fatalf("kept %v", bodies(got))
	}
	if open(t, path, u, 5).Limit() != 5 {
		t.Fatal("an explicit limit did not win over the setting")
	}
}
