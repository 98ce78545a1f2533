package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/history"
	"github.com/quicproquo/qpq/node/home"
)

// A long `recv --follow` (or chat) whose history keeps nothing, or cannot
// be opened, must not hold every message it showed in memory.
func TestRecvKeeperHoldsNothingWhenNothingIsKept(t *testing.T) {
	u, bob := e2e.NewUser(), e2e.NewUser()
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, h home.Home) func(string) string
	}{
		{"history cannot be opened", func(t *testing.T, h home.Home) func(string) string {
			// A directory where the file should be: history.Open fails.
			if err := os.MkdirAll(h.Path(history.FileName), 0o700); err != nil {
				t.Fatal(err)
			}
			return func(string) string { return "" }
		}},
		{"QPQ_HISTORY=0", func(t *testing.T, h home.Home) func(string) string {
			return func(k string) string {
				if k == "QPQ_HISTORY" {
					return "0"
				}
				return ""
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := home.Home{Dir: t.TempDir()}
			getenv := tc.setup(t, h)
			var warned []string
			k := newKeeper(h, u, getenv, func(string) {}, func(err error) { warned = append(warned, err.Error()) })
			body := []byte(strings.Repeat("x", 1000))
			for i := 0; i < 2000; i++ {
				k.dm("id", e2e.Opened{From: bob.Fingerprint(), Body: body, SentAt: time.Now(), Seq: uint64(i + 1)})
				if i%100 == 99 {
					k.flush()
				}
			}
			k.flush()
			if len(k.pending) != 0 || cap(k.pending) > 16 {
				t.Fatalf("keeper holds %d messages (capacity %d) after 2000 shown with nothing kept", len(k.pending), cap(k.pending))
			}
			if tc.name == "history cannot be opened" && len(warned) == 0 {
				t.Fatal("no warning that the history could not be opened")
			}
		})
	}
}
