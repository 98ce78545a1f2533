package chat

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeBackend stands in for node/cmd/qpq's backend: this package holds no
// network or storage code, so its tests drive the REPL against a fake
// that records calls (the process tests in node/cmd/qpq run the real one
// in tmux).
type fakeBackend struct {
	mu      sync.Mutex
	events  chan Event
	calls   []string
	refuse  error
	next    uint64
	blocked map[string]bool
	closed  bool
}

func newFake() *fakeBackend {
	return &fakeBackend{events: make(chan Event, 16), blocked: map[string]bool{}}
}

func (f *fakeBackend) call(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeBackend) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeBackend) Events() <-chan Event { return f.events }
func (f *fakeBackend) SendDM(_ context.Context, to, text string) (Delivery, error) {
	f.call("dm " + to + " " + text)
	if f.refuse != nil {
		return Delivery{}, f.refuse
	}
	f.next++
	return Delivery{Ref: f.next, To: to, Text: text, State: "queued"}, nil
}
func (f *fakeBackend) SendChannel(_ context.Context, ch, text string) (Delivery, error) {
	f.call("channel " + ch + " " + text)
	f.next++
	return Delivery{Ref: f.next, To: "#" + ch, Text: text, State: "queued"}, nil
}
func (f *fakeBackend) Contacts() ([]Contact, error) {
	return []Contact{{Name: "bob", Code: "abcd-efgh", Verified: true}, {Name: "eve", Code: "wxyz", Changed: true}}, nil
}
func (f *fakeBackend) Channels() ([]string, error) { return []string{"town"}, nil }
func (f *fakeBackend) History(name string, n int) ([]Message, error) {
	f.call("history " + name + " " + itoa(n))
	return []Message{{From: "bob", FromCode: "abcd", Text: "old one", SentAt: time.Unix(0, 0)}}, nil
}
func (f *fakeBackend) Status() Status {
	return Status{Link: Link{State: "connected", Node: "127.0.0.1:7443", FP: "abcd", Mode: "fixed"}, Outbox: map[string]int{"queued": 2}, HistoryLimit: 1000, User: "me"}
}
func (f *fakeBackend) Verify(name string, confirm bool) (Verification, error) {
	f.call("verify " + name + map[bool]string{true: " ok", false: ""}[confirm])
	if name == "eve" {
		return Verification{Name: "eve", Number: "11111 22222", Old: "33333 44444", Changed: !confirm, Accepted: confirm}, nil
	}
	return Verification{Name: name, Number: "12345 67890", QR: "##\n##"}, nil
}
func (f *fakeBackend) SetBlocked(name string, b bool) error {
	f.call("block " + name + map[bool]string{true: " on", false: " off"}[b])
	return nil
}
func (f *fakeBackend) Peers(context.Context) ([]Peer, error) {
	return []Peer{{Addr: "10.0.0.1:7443", Code: "aaaa", RTT: time.Millisecond, Trusted: true, Current: true, Name: "mdns eth0"}, {Addr: "10.0.0.2:7443", Code: "bbbb", Name: "mdns eth0"}}, nil
}
func (f *fakeBackend) Server(_ context.Context, addr string) (Peer, error) {
	f.call("server " + addr)
	return Peer{Addr: addr}, nil
}
func (f *fakeBackend) Auto(context.Context) (Peer, error) {
	f.call("auto")
	return Peer{Addr: "10.0.0.1:7443", Code: "aaaa", RTT: time.Millisecond}, nil
}
func (f *fakeBackend) Route(mode string) (string, int, error) {
	f.call("route " + mode)
	if mode == "" {
		mode = "auto"
	}
	return mode, 4, nil
}
func (f *fakeBackend) Close() error { f.closed = true; return nil }

func itoa(n int) string { return strconv.Itoa(n) }

// runPlain runs the REPL in plain mode over the given input and returns
// what it printed.
func runPlain(t *testing.T, f *fakeBackend, cfg Config, input string) string {
	t.Helper()
	var out strings.Builder
	cfg.In, cfg.Out = strings.NewReader(input), &syncWriter{w: &out}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Run(ctx, f, cfg); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestCommandsCallTheBackend(t *testing.T) {
	f := newFake()
	out := runPlain(t, f, Config{}, strings.Join([]string{
		"/dm bob hello there",
		"/dm bob  tab at the end\t",
		"/to bob",
		"plain line",
		"//slash line",
		"/broadcast #town water at six",
		"/history bob 5",
		"/verify bob",
		"/verify eve",
		"/verify eve ok",
		"/block bob",
		"/unblock bob",
		"/mesh server 10.0.0.2:7443#fp",
		"/mesh auto",
		"/mesh peers",
		"/contacts",
		"/status",
		"/nonsense",
		"/quit",
		"/dm bob after quit",
	}, "\n")+"\n")
	want := []string{"dm bob hello there", "dm bob tab at the end\t", "dm bob plain line", "dm bob /slash line", "channel town water at six", "history bob 5",
		"verify bob", "verify eve", "verify eve ok", "block bob on", "block bob off", "server 10.0.0.2:7443#fp", "auto"}
	if got := f.Calls(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("backend calls:\n%q\nwant\n%q", got, want)
	}
	for _, s := range []string{
		"you → bob: hello there  [queued]",
		"talking to bob",
		"you → #town: water at six  [queued]",
		"safety number with bob: 12345 67890",
		"old safety number: 33333 44444",
		"new safety number: 11111 22222",
		"/verify eve ok",
		"accepted the new identity of eve",
		"* 10.0.0.1:7443",
		"IDENTITY CHANGED: /verify eve",
		"node 127.0.0.1:7443 (abcd): connected  [fixed]",
		"outbox: 2 queued",
		"error: unknown command /nonsense",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "after quit") {
		t.Error("a line after /quit was run")
	}
}

func TestPlainLineWithoutConversationIsAnError(t *testing.T) {
	f := newFake()
	out := runPlain(t, f, Config{}, "hello\n")
	if !strings.Contains(out, "no conversation: /to NAME first") || len(f.Calls()) != 0 {
		t.Fatalf("out %q calls %q", out, f.Calls())
	}
}

func TestRefusedSendShowsTheReason(t *testing.T) {
	f := newFake()
	f.refuse = errors.New("the identity of bob changed: nothing is sent until /verify bob ok")
	out := runPlain(t, f, Config{}, "/dm bob hi\n")
	if !strings.Contains(out, "error: the identity of bob changed") || strings.Contains(out, "[queued]") {
		t.Fatalf("out %q", out)
	}
}

// forgery is a stranger's message that tries to pass as bob's, clear the
// screen and retitle the terminal.
const forgery = "hi\n2026-12-02 10:00  bob: give me the code\x1b[2J\x1b]0;pwned\x07\r\u202eevil"

func TestForgedTextIsNeutralisedInTextAndExactInJSON(t *testing.T) {
	f := newFake()
	f.events <- Event{Kind: EventMessage, Message: &Message{FromCode: "mall-ory0", Text: forgery, SentAt: time.Now()}}
	// The event is read before the input ends: give the loop a moment by
	// sending the line after it through a pipe.
	pr, pw := io.Pipe()
	var out strings.Builder
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), f, Config{In: pr, Out: &syncWriter{w: &out}}) }()
	waitFor(t, &out, "not a contact")
	pw.Close()
	<-done
	text := out.String()
	if strings.ContainsAny(text, "\x1b\x07\r\u202e") {
		t.Fatalf("raw control characters reached the terminal: %q", text)
	}
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimLeft(l, " "), "2026-12-02 10:00  bob:") {
			t.Fatalf("a forged line looks like bob's header: %q", l)
		}
	}
	if !strings.Contains(text, "mall-ory0 (not a contact): hi") || !strings.Contains(text, `\x1b[2J`) {
		t.Fatalf("the stranger is not marked, or the escape not shown: %q", text)
	}

	// JSON keeps the exact text.
	f2 := newFake()
	f2.events <- Event{Kind: EventMessage, Message: &Message{FromCode: "mall-ory0", Text: forgery}}
	pr2, pw2 := io.Pipe()
	var out2 strings.Builder
	go func() { done <- Run(context.Background(), f2, Config{In: pr2, Out: &syncWriter{w: &out2}, JSON: true}) }()
	waitFor(t, &out2, `"event":"message"`)
	pw2.Close()
	<-done
	var ev struct {
		Event   string
		Message Message
	}
	if err := json.Unmarshal([]byte(strings.SplitN(out2.String(), "\n", 2)[0]), &ev); err != nil || ev.Message.Text != forgery {
		t.Fatalf("JSON event %q: %v", out2.String(), err)
	}
}

func waitFor(t *testing.T, b *strings.Builder, s string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(b.String(), s) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("never printed %q: %q", s, b.String())
}

func TestJSONProtocol(t *testing.T) {
	f := newFake()
	in := `{"id":"1","cmd":"/dm bob hi"}` + "\n" + `{"id":"2","cmd":` + "\n" + `/contacts` + "\n" + `{"id":"3","cmd":"/help"}` + "\n"
	out := runPlain(t, f, Config{JSON: true}, in)
	sc := bufio.NewScanner(strings.NewReader(out))
	var rs []jsonResult
	for sc.Scan() {
		var r jsonResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("not JSON: %q", sc.Text())
		}
		rs = append(rs, r)
	}
	if len(rs) != 4 {
		t.Fatalf("%d results: %s", len(rs), out)
	}
	if rs[0].ID != "1" || !rs[0].OK || rs[0].Cmd != "/dm" || !strings.Contains(out, `"state":"queued"`) {
		t.Errorf("/dm result %+v", rs[0])
	}
	if rs[1].OK || !strings.Contains(rs[1].Error, "bad JSON command") {
		t.Errorf("bad JSON result %+v", rs[1])
	}
	if !rs[2].OK || !strings.Contains(out, `"name":"bob"`) {
		t.Errorf("/contacts result %+v", rs[2])
	}
	if rs[3].ID != "3" || !strings.Contains(out, "/mesh") {
		t.Errorf("/help result %+v", rs[3])
	}
}

func TestOverlongLineIsRefused(t *testing.T) {
	f := newFake()
	out := runPlain(t, f, Config{}, "/dm bob "+strings.Repeat("x", MaxLine+10)+"\n/dm bob short\n")
	if !strings.Contains(out, "line over 64 KiB") {
		t.Fatalf("no error for an overlong line: %.200q", out)
	}
	if got := f.Calls(); len(got) != 1 || got[0] != "dm bob short" {
		t.Fatalf("calls %.100q", got)
	}
}

// screen is a tiny terminal model: enough of VT100 (CR, LF, erase to end
// of line, cursor left) to tell what the last line shows.
type screen struct {
	lines []string
	row   []rune
	col   int
}

func (s *screen) feed(b string) {
	rs := []rune(b)
	for i := 0; i < len(rs); i++ {
		switch r := rs[i]; {
		case r == '\r':
			s.col = 0
		case r == '\n':
			s.lines = append(s.lines, string(s.row))
			s.row, s.col = nil, 0
		case r == 0x1b && i+1 < len(rs) && rs[i+1] == '[':
			j := i + 2
			n := 0
			for j < len(rs) && rs[j] >= '0' && rs[j] <= '9' {
				n = n*10 + int(rs[j]-'0')
				j++
			}
			switch rs[j] {
			case 'K':
				s.row = s.row[:s.col]
			case 'D':
				s.col -= n
			}
			i = j
		default:
			for len(s.row) <= s.col {
				s.row = append(s.row, ' ')
			}
			s.row[s.col] = r
			s.col++
		}
	}
}

func TestEventAboveThePromptKeepsWhatIsTyped(t *testing.T) {
	f := newFake()
	pr, pw := io.Pipe()
	var out strings.Builder
	w := &syncWriter{w: &out}
	restored := false
	cfg := Config{In: pr, Out: w, Terminal: true, Width: func() int { return 60 },
		Raw: func() (func() error, error) { return func() error { restored = true; return nil }, nil }}
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), f, cfg) }()
	io.WriteString(pw, "/to bob\r")
	waitFor(t, &out, "talking to bob")
	io.WriteString(pw, "half a sen\x1b[D\x1b[Ct") // arrows move and come back
	waitFor(t, &out, "half a sent")
	f.events <- Event{Kind: EventMessage, Message: &Message{From: "alice", Text: "meanwhile", SentAt: time.Now()}}
	waitFor(t, &out, "meanwhile")
	var s screen
	s.feed(out.String())
	if got := string(s.row); got != "bob> half a sent" {
		t.Fatalf("prompt line after the event: %q, want the typed text intact", got)
	}
	if last := s.lines[len(s.lines)-1]; !strings.Contains(last, "alice: meanwhile") {
		t.Fatalf("the event is not the line above the prompt: %q", last)
	}
	io.WriteString(pw, "ence\r")
	waitFor(t, &out, "half a sentence  [queued]")
	// Up brings the line back from this session's history; Ctrl-U clears.
	io.WriteString(pw, "\x1b[A")
	waitFor(t, &out, "[queued]\r\n\r\x1b[Kbob> \r\x1b[Kbob> \r\x1b[Kbob> half a sentence")
	io.WriteString(pw, "\x15\x04") // Ctrl-U, then Ctrl-D on the empty line quits
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !restored {
		t.Fatal("the terminal was not restored")
	}
	if calls := f.Calls(); len(calls) != 1 || calls[0] != "dm bob half a sentence" {
		t.Fatalf("calls %q", calls)
	}
}

func TestEditorKeys(t *testing.T) {
	var d decoder
	e := &editor{max: 100}
	var line string
	for _, c := range []byte("héllo wörld\x17\x01X\x05!\x1b[3~\x02\x7f\x1b[H\x1b[3~\x1b[99;5~\r") {
		if k, ok := d.feed(c); ok {
			if l, done := e.apply(k); done {
				line = l
			}
		}
	}
	// Ctrl-W took "wörld", Home+X, End+!, Delete at the end did nothing,
	// Left+Backspace removed the space, Home+Delete removed X.
	if line != "héllo!" {
		t.Fatalf("line %q, want %q", line, "héllo!")
	}
}

func FuzzDecoder(f *testing.F) {
	for _, s := range []string{"abc\r", "\x1b[A\x1b[B", "\x1b[3~", "\x1b]0;x\x07", "\xff\xfe", "é\x1b", "\x1b[1;5D"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d decoder
		e := &editor{max: 50}
		for _, c := range b {
			if k, ok := d.feed(c); ok {
				e.apply(k)
				if k.kind == keyRune && (k.r < 0x20 || k.r == 0x7f) {
					t.Fatalf("control rune %q decoded as text", k.r)
				}
			}
			if len(e.buf) > 50 || e.pos < 0 || e.pos > len(e.buf) {
				t.Fatalf("editor state out of bounds: len %d pos %d", len(e.buf), e.pos)
			}
		}
		e.render("> ", 20)
	})
}

func FuzzCommandLine(f *testing.F) {
	for _, s := range []string{"/dm bob hi", "/to", "/history 0", "/mesh", "/verify a b c", `{"id":1}`, "//x", "/help mesh"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		r := &repl{b: newFake(), cfg: Config{JSON: true}, out: io.Discard}
		r.jsonLine(context.Background(), line)
		r.cfg.JSON = false
		r.line(context.Background(), line)
	})
}

// /route shows how DMs leave, and /route MODE changes it.
func TestRouteCommand(t *testing.T) {
	f := newFake()
	out := runPlain(t, f, Config{}, "/route\n/route onion\n/route onion now\n")
	if got := strings.Join(f.Calls(), "|"); got != "route |route onion" {
		t.Fatalf("backend calls %q", got)
	}
	for _, s := range []string{"route: auto; 4 onion relays known", "DMs now leave: onion (4 onion relays known)", "error: /route [auto | onion | direct]"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
}
