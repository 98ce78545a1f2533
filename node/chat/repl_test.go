package chat

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// fakeBackend stands in for node/cmd/qpq's Backend: this package has no
// network or storage code, so there is no real part to run here.
type fakeBackend struct {
	ev   chan Event
	sent []string
}

func (f *fakeBackend) Events() <-chan Event { return f.ev }
func (f *fakeBackend) SendDM(_ context.Context, to, text string) (Delivery, error) {
	f.sent = append(f.sent, to+":"+text)
	return Delivery{To: to, Text: text, State: "queued"}, nil
}
func (f *fakeBackend) SendChannel(ctx context.Context, c, t string) (Delivery, error) {
	return f.SendDM(ctx, "#"+c, t)
}
func (f *fakeBackend) Contacts() ([]Contact, error)                 { return nil, nil }
func (f *fakeBackend) Channels() ([]string, error)                  { return nil, nil }
func (f *fakeBackend) History(string, int) ([]Message, error)       { return nil, nil }
func (f *fakeBackend) Status() Status                               { return Status{} }
func (f *fakeBackend) Verify(string, bool) (Verification, error)    { return Verification{}, nil }
func (f *fakeBackend) SetBlocked(string, bool) error                { return nil }
func (f *fakeBackend) Peers(context.Context) ([]Peer, error)        { return nil, nil }
func (f *fakeBackend) Server(context.Context, string) (Peer, error) { return Peer{}, nil }
func (f *fakeBackend) Auto(context.Context) (Peer, error)           { return Peer{}, nil }
func (f *fakeBackend) Close() error                                 { return nil }

func TestPlainDMAndUnknownCommand(t *testing.T) {
	b := &fakeBackend{ev: make(chan Event)}
	var out bytes.Buffer
	in := strings.NewReader("hello\n/to bob\nhi there\n/nope\n/quit\n")
	if err := Run(context.Background(), b, Config{In: in, Out: &out, Now: func() time.Time { return time.Unix(0, 0) }}); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"no conversation: /to NAME first", "you → bob: hi there  [queued]", "unknown command /nope"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if len(b.sent) != 1 || b.sent[0] != "bob:hi there" {
		t.Errorf("sent %q", b.sent)
	}
	if strings.Contains(got, "\x1b") {
		t.Errorf("escape sequence in plain mode: %q", got)
	}
}
