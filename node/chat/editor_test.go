package chat

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
)

func typeKeys(e *editor, s string) (lines []string) {
	for _, k := range e.dec.feed([]byte(s)) {
		if l, a := e.key(k); a == actLine {
			lines = append(lines, l)
			e.reset()
		}
	}
	return lines
}

func TestEditorKeys(t *testing.T) {
	e := &editor{}
	typeKeys(e, "hllo\x1b[D\x1b[D\x1b[D"+"e"+"\x1b[F!"+"\x01>"+"\x1b[5~")
	if got := string(e.buf); got != ">hello!" {
		t.Fatalf("buf %q", got)
	}
	typeKeys(e, "\x05 world\x17")
	if got := string(e.buf); got != ">hello! " {
		t.Fatalf("after Ctrl-W %q", got)
	}
	if l := typeKeys(e, "\r"); len(l) != 1 || l[0] != ">hello! " {
		t.Fatalf("lines %q", l)
	}
	typeKeys(e, "two\r")
	typeKeys(e, "draft\x1b[A")
	if string(e.buf) != "two" {
		t.Fatalf("up: %q", string(e.buf))
	}
	typeKeys(e, "\x1b[A\x1b[B\x1b[B")
	if string(e.buf) != "draft" {
		t.Fatalf("down back to draft: %q", string(e.buf))
	}
	if got := e.render("bob> ", 80); got != "\r\x1b[Kbob> draft\r\x1b[10C" {
		t.Fatalf("render %q", got)
	}
}

func TestEventKeepsTypedLine(t *testing.T) {
	b := &fakeBackend{ev: make(chan Event, 1)}
	r := &repl{b: b, cfg: Config{Terminal: true}, ed: &editor{}}
	var out bytes.Buffer
	r.w = bufioWriter(&out)
	r.handleInput(context.Background(), inputChunk{data: []byte("/to bob\rhel")})
	r.showEvent(Event{Kind: EventNotice, Notice: &Notice{Text: "hi"}})
	r.w.Flush()
	s := out.String()
	if !strings.HasSuffix(s, "\r\x1b[K* hi\r\n\r\x1b[Kbob> hel\r\x1b[8C") {
		t.Fatalf("screen bytes %q", s)
	}
}

func FuzzDecoder(f *testing.F) {
	for _, s := range []string{"abc", "\x1b[A", "\x1b[3~", "\x1b[1;5C", "\xe2\x82", "\x1bO", "é\x7f\x17"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e := &editor{}
		for _, k := range e.dec.feed(b) {
			e.key(k)
		}
		e.render("> ", 10)
		for _, r := range e.buf {
			if r < 0x20 || r == 0x1b {
				t.Fatalf("control rune %q in buffer", r)
			}
		}
	})
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"/dm bob hi", "/mesh dm a b", "/mesh", "/history 3", "hi", " /to"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { parse(s) })
}

func bufioWriter(w io.Writer) *bufio.Writer { return bufio.NewWriter(w) }
