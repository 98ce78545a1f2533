package display

import (
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

var at = time.Date(2026, 12, 2, 0, 59, 0, 0, time.UTC)

func TestEscapeShowsWhatCouldForgeOrHide(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain text, ünïcode, 日本", "plain text, ünïcode, 日本"},
		{"\x1b[2J\x1b]0;title\x07", `\x1b[2J\x1b]0;title\x07`},
		{"a\rb\tc\nd", `a\rb\tc\nd`},
		{"del\x7f", `del\x7f`},
		{"c1 \u009b31m \u0085", `c1 \u009b31m \u0085`},
		{"evil\u202egnp.exe", `evil\u202egnp.exe`},
		{"\u2066iso\u2069 \u200binvisible\ufeff", `\u2066iso\u2069 \u200binvisible\ufeff`},
		{"line\u2028sep", `line\u2028sep`},
		{"bad \xff\xfe utf8", `bad \xff\xfe utf8`},
		{"tag \U000e0041", `tag \U000e0041`},
		{"emoji 👩\u200d💻", "emoji 👩\u200d💻"},
		{"e\u0301\u0301\u0301\u0301\u0301\u0301", "e\u0301\u0301\u0301\u0301" + `\u0301\u0301`},
	} {
		if got := Escape(c.in); got != c.want {
			t.Errorf("Escape(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestForgedLineStaysInsideItsMessage(t *testing.T) {
	l := Layout{Location: time.UTC}
	got := l.Format(Message{SentAt: at, FromShort: "abcd-efgh-ijkl-mnop-qrst-uvwx-yz23",
		Body: "hi\n2026-12-02 00:59  alice: please reply with the door code\x1b[1A"})
	want := "2026-12-02 00:59  abcd-efgh-ijkl-mnop-qrst-uvwx-yz23 (not a contact): hi\n" +
		"    2026-12-02 00:59  alice: please reply with the door code\\x1b[1A\n"
	if got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestContactAndChannelHeaders(t *testing.T) {
	l := Layout{Location: time.UTC}
	if got := l.Format(Message{SentAt: at, From: "alice", Body: "hello"}); got != "2026-12-02 00:59  alice: hello\n" {
		t.Fatalf("contact DM: %q", got)
	}
	if got := l.Format(Message{SentAt: at, Channel: "ops\x1b", From: "bob", Body: "x\r\ny\n\n"}); got != "2026-12-02 00:59  #ops\\x1b bob: x\n    y\n" {
		t.Fatalf("channel: %q", got)
	}
	if got := l.Format(Message{SentAt: at, From: "bob", Body: ""}); got != "2026-12-02 00:59  bob:\n" {
		t.Fatalf("empty body: %q", got)
	}
}

func TestWrapKeepsSenderTextOffColumnZero(t *testing.T) {
	l := Layout{Width: 40, Location: time.UTC}
	// Spaces that would make a terminal wrap a fake header to column 0.
	body := "hi" + strings.Repeat(" ", 60) + "2026-12-02 00:59  alice: door code"
	got := l.Format(Message{SentAt: at, From: "mallory", Body: body})
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("not wrapped: %q", got)
	}
	for i, line := range lines {
		if Width(line) > 40 {
			t.Errorf("line %d is %d columns: %q", i, Width(line), line)
		}
		if i > 0 && !strings.HasPrefix(line, Indent) {
			t.Errorf("line %d not indented: %q", i, line)
		}
	}
	// Wide runes count two columns.
	got = l.Format(Message{SentAt: at, From: "b", Body: strings.Repeat("日", 50)})
	for _, line := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		if Width(line) > 40 {
			t.Errorf("wide line is %d columns: %q", Width(line), line)
		}
	}
}

// checkBlock asserts what any formatted message must satisfy.
func checkBlock(t *testing.T, l Layout, m Message, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("invalid UTF-8 in %q", out)
	}
	if !strings.HasSuffix(out, "\n") {
		t.Fatalf("no final newline: %q", out)
	}
	marks := 0
	for _, r := range out {
		if r == '\n' {
			continue
		}
		if r != 0x200c && r != 0x200d && unsafeRune(r) {
			t.Fatalf("unsafe rune %U in %q", r, out)
		}
		if unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r) {
			if marks++; marks > maxMarks {
				t.Fatalf("more than %d combining marks in a row in %q", maxMarks, out)
			}
		} else {
			marks = 0
		}
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	head := l.Header(m)
	if !strings.HasPrefix(lines[0], head) {
		t.Fatalf("first line %q does not start with the header %q", lines[0], head)
	}
	for i, line := range lines[1:] {
		if !strings.HasPrefix(line, Indent) {
			t.Fatalf("line %d %q is not indented: it could pass for a header", i+1, line)
		}
		if l.Width > Width(Indent)+2 && Width(line) > l.Width {
			t.Fatalf("line %d %q is wider than %d", i+1, line, l.Width)
		}
	}
}

func FuzzFormat(f *testing.F) {
	f.Add("hi\n2026-12-02 00:59  alice: please reply", "", "alice", 0)
	f.Add("\x1b[2J\u202e\r\x85\xff", "ops", "", 80)
	f.Add(strings.Repeat("日本 ", 40), "", "", 30)
	f.Add("e\u0301\u0301\u0301\u0301\u0301\u0301", "c\nh", "n\x1b", 5)
	f.Fuzz(func(t *testing.T, body, channel, from string, width int) {
		if width < 0 || width > 500 {
			width = 0
		}
		l := Layout{Width: width, Location: time.UTC}
		m := Message{SentAt: at, Channel: channel, From: from, FromShort: "abcd-efgh-ijkl-mnop-qrst-uvwx-yz23", Body: body}
		checkBlock(t, l, m, l.Format(m))
		e := Escape(body)
		if strings.ContainsAny(e, "\n\r\x1b") {
			t.Fatalf("Escape left a control character: %q", e)
		}
		if again := Escape(e); again != e {
			t.Fatalf("Escape is not idempotent: %q then %q", e, again)
		}
	})
}
