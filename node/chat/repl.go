package chat

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/quicproquo/qpq/node/display"
)

// MaxLine bounds one input line (a typed line, or one --json command) in
// bytes; longer lines are refused with an error and dropped whole.
const MaxLine = 64 << 10

// Config is how Run talks to the person (or program) on the other side.
type Config struct {
	In  io.Reader // keys (Terminal) or lines; Run returns at EOF
	Out io.Writer // everything shown; only Run's own goroutine writes it

	// Terminal turns on the line editor: In delivers raw key bytes and
	// Out is a VT100-like terminal. Without it (stdin is a pipe or
	// file) lines are read as they come and nothing but plain lines is
	// written: no escape sequences at all.
	Terminal bool
	// RawFd, with Terminal, is the descriptor put in raw mode
	// (golang.org/x/term) for as long as Run runs, restored on every
	// return; negative: none (In is already raw, e.g. in tests).
	RawFd int

	// JSON turns on the --json line protocol (see the package doc in
	// doc.go); Terminal is ignored then.
	JSON bool

	// Width is the terminal's width in columns now (called at each
	// redraw, so a resize is followed); nil or <= 0: 80 with Terminal,
	// no wrapping without.
	Width func() int
	// Now is the clock for sent messages' lines; nil: time.Now.
	Now func() time.Time
	// Location for times shown; nil: time.Local.
	Location *time.Location
}

// Run is the REPL: it reads commands and lines from cfg.In, calls b, and
// shows b's events, until /quit, Ctrl-D on an empty line (Ctrl-C on an
// empty line too, in Terminal mode), EOF on In, ctx's end, or b's Events
// channel closing. It returns nil on those ends (ctx's end: ctx.Err()),
// and an error only when the terminal or Out fails. It does not close b.
//
// A goroutine reads cfg.In; it stops at In's next EOF or error after Run
// returns (a read from a terminal cannot be interrupted), and never
// touches Out after Run returned.
func Run(ctx context.Context, b Backend, cfg Config) (err error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.JSON {
		cfg.Terminal = false
	}
	if cfg.Terminal && cfg.RawFd >= 0 {
		old, rerr := term.MakeRaw(cfg.RawFd)
		if rerr != nil {
			return fmt.Errorf("terminal raw mode on fd %d: %w", cfg.RawFd, rerr)
		}
		defer func() {
			if rerr := term.Restore(cfg.RawFd, old); rerr != nil && err == nil {
				err = fmt.Errorf("restore terminal fd %d: %w", cfg.RawFd, rerr)
			}
		}()
	}
	r := &repl{b: b, cfg: cfg, w: bufio.NewWriter(cfg.Out)}
	if cfg.Terminal {
		r.ed = &editor{}
	}
	done := make(chan struct{})
	defer close(done)
	input := make(chan inputChunk)
	go r.readInput(input, done)

	r.redraw()
	if err := r.flush(); err != nil {
		return err
	}
	events := b.Events()
	for !r.quit {
		select {
		case <-ctx.Done():
			r.clearPrompt()
			r.flush()
			return ctx.Err()
		case ev, ok := <-events:
			if !ok {
				r.showNotice("warn", "the backend stopped")
				r.clearPrompt()
				return r.flush()
			}
			r.showEvent(ev)
		case in := <-input:
			r.handleInput(ctx, in)
		}
		if err := r.flush(); err != nil {
			return err
		}
	}
	r.clearPrompt()
	return r.flush()
}

// inputChunk is what the reader goroutine passes on: raw bytes
// (Terminal), one line, an overlong line, or the end of input.
type inputChunk struct {
	data    []byte
	line    string
	tooLong bool
	eof     bool
}

// readInput reads cfg.In until EOF, sending chunks until done closes.
func (r *repl) readInput(out chan<- inputChunk, done <-chan struct{}) {
	send := func(c inputChunk) bool {
		select {
		case out <- c:
			return true
		case <-done:
			return false
		}
	}
	if r.cfg.Terminal {
		buf := make([]byte, 4096)
		for {
			n, err := r.cfg.In.Read(buf)
			if n > 0 && !send(inputChunk{data: append([]byte(nil), buf[:n]...)}) {
				return
			}
			if err != nil {
				send(inputChunk{eof: true})
				return
			}
		}
	}
	br := bufio.NewReaderSize(r.cfg.In, 4096)
	for {
		line, tooLong, err := readLine(br, MaxLine)
		if line != "" || tooLong || err == nil {
			if !send(inputChunk{line: line, tooLong: tooLong}) {
				return
			}
		}
		if err != nil {
			send(inputChunk{eof: true})
			return
		}
	}
}

// readLine reads one line without its "\n" (and "\r"); a line over max
// bytes is read to its end and dropped, reported by tooLong.
func readLine(br *bufio.Reader, max int) (line string, tooLong bool, err error) {
	var b []byte
	for {
		frag, err := br.ReadSlice('\n')
		if !tooLong {
			b = append(b, frag...)
			if len(b) > max+1 { // +1: the newline
				tooLong, b = true, nil
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if tooLong {
			return "", true, err
		}
		s := strings.TrimSuffix(string(b), "\n")
		s = strings.TrimSuffix(s, "\r")
		if len(s) > max {
			return "", true, err
		}
		return s, false, err
	}
}

// repl is one Run's state; only Run's goroutine uses it.
type repl struct {
	b    Backend
	cfg  Config
	w    *bufio.Writer
	ed   *editor // nil unless Terminal
	to   string  // current conversation: contact name, "#channel", ""
	quit bool
	werr error
}

func (r *repl) flush() error {
	if r.werr == nil {
		r.werr = r.w.Flush()
	}
	if r.werr != nil {
		return fmt.Errorf("chat output: %w", r.werr)
	}
	return nil
}

func (r *repl) width() int {
	if r.cfg.Width != nil {
		if w := r.cfg.Width(); w > 0 {
			return w
		}
	}
	if r.cfg.Terminal {
		return 80
	}
	return 0
}

func (r *repl) layout() display.Layout {
	return display.Layout{Width: r.width(), Location: r.cfg.Location}
}

// print shows text (lines ending in "\n", already safe) above the
// prompt: in Terminal mode the prompt line is erased, the lines are
// written with "\r\n" and the prompt with what is typed is redrawn.
func (r *repl) print(text string) {
	if text == "" {
		return
	}
	if !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	if r.ed == nil {
		r.w.WriteString(text)
		return
	}
	r.w.WriteString("\r\x1b[K")
	r.w.WriteString(strings.ReplaceAll(text, "\n", "\r\n"))
	r.redraw()
}

func (r *repl) printf(format string, a ...any) {
	r.print(fmt.Sprintf(format, a...))
}

// prompt is the current conversation's prompt.
func (r *repl) prompt() string {
	if r.to == "" {
		return "> "
	}
	return display.Escape(r.to) + "> "
}

func (r *repl) redraw() {
	if r.ed == nil {
		return
	}
	r.w.WriteString(r.ed.render(r.prompt(), r.width()))
}

func (r *repl) clearPrompt() {
	if r.ed != nil {
		r.w.WriteString("\r\x1b[K")
	}
}

func (r *repl) handleInput(ctx context.Context, in inputChunk) {
	switch {
	case in.eof:
		r.quit = true
	case in.tooLong:
		r.fail("", fmt.Errorf("line longer than %d bytes: dropped", MaxLine))
	case r.ed != nil:
		for _, k := range r.ed.dec.feed(in.data) {
			line, act := r.ed.key(k)
			switch act {
			case actLine:
				// Keep the line on screen as typed, then run it.
				r.w.WriteString(r.ed.render(r.prompt(), r.width()))
				r.w.WriteString("\r\n")
				r.ed.reset()
				if len(line) > MaxLine {
					r.fail("", fmt.Errorf("line longer than %d bytes: dropped", MaxLine))
				} else {
					r.command(ctx, "", line)
				}
				if r.quit {
					return
				}
				r.redraw()
			case actQuit:
				r.quit = true
				return
			case actRedraw:
				r.redraw()
			}
		}
	case r.cfg.JSON:
		r.jsonLine(ctx, in.line)
	default:
		r.command(ctx, "", in.line)
	}
}

// fail shows a command's error (text) or its JSON result.
func (r *repl) fail(id string, err error) {
	if r.cfg.JSON {
		r.result(id, jsonResult{Error: err.Error()})
		return
	}
	r.print("error: " + display.Escape(err.Error()) + "\n")
}

func (r *repl) showNotice(level, text string) {
	r.showEvent(Event{Kind: EventNotice, Notice: &Notice{Level: level, Text: text}})
}
