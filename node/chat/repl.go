package chat

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/quicproquo/qpq/node/display"
)

// MaxLine bounds one input line (a command or a message) in every mode;
// a longer one is refused with an error and nothing is sent.
const MaxLine = 64 << 10

// commandTimeout bounds one command's backend call (/mesh peers browses
// and measures; the rest are local).
const commandTimeout = 30 * time.Second

// Config says where the REPL reads and writes.
type Config struct {
	In  io.Reader
	Out io.Writer
	// Terminal makes In a terminal the REPL edits lines on: a prompt, the
	// line editor, incoming events printed above the prompt. Otherwise
	// (a pipe, a file) lines are read as they come and events are printed
	// as lines, without escape sequences.
	Terminal bool
	// Raw, when set with Terminal, puts the terminal in raw mode and
	// returns what restores it; Run restores it on every way out.
	Raw func() (restore func() error, err error)
	// Width is the terminal's width in columns (0 or nil: 80, and no
	// wrapping outside Terminal mode).
	Width func() int
	// JSON selects the line protocol (see json.go) instead of text.
	JSON bool
}

// Run is the REPL: it reads commands from cfg.In and prints b's events
// until /quit, the end of the input (Ctrl-D on an empty line) or ctx
// ends. It does not close b. The goroutine reading cfg.In ends when In
// does (the process's exit for a terminal): a blocked read cannot be
// interrupted portably.
func Run(ctx context.Context, b Backend, cfg Config) error {
	r := &repl{b: b, cfg: cfg, out: cfg.Out, now: time.Now}
	if cfg.Terminal && cfg.Raw != nil && !cfg.JSON {
		restore, err := cfg.Raw()
		if err != nil {
			return fmt.Errorf("terminal raw mode: %w", err)
		}
		defer restore() //nolint:errcheck // nothing left to tell the person
	}
	r.ed = &editor{max: MaxLine / 4}
	return r.loop(ctx)
}

// repl is one Run's state; only Run's goroutine touches it.
type repl struct {
	b    Backend
	cfg  Config
	out  io.Writer
	mu   sync.Mutex // serialises writes to out
	ed   *editor
	dec  decoder
	to   string // the current conversation: a contact or "#channel"
	now  func() time.Time
	quit bool
	// shown is the last delivery state shown per outbox entry, so the
	// same state is not printed twice (the send line shows the first).
	shown map[uint64]string
}

// maxShown bounds repl.shown; past it the map starts over (at worst a
// state is shown twice).
const maxShown = 4096

// input is what the reading goroutine hands the loop.
type input struct {
	data []byte // terminal bytes
	line string // a whole line (not Terminal mode)
	long bool   // the line was over MaxLine and was dropped
	err  error  // io.EOF or a read error: the input ended
}

func (r *repl) editing() bool { return r.cfg.Terminal && !r.cfg.JSON }

func (r *repl) loop(ctx context.Context) error {
	ins := make(chan input, 16)
	stop := make(chan struct{})
	defer close(stop)
	go r.read(ins, stop)
	if r.editing() {
		r.redraw()
	}
	events := r.b.Events()
	for !r.quit {
		select {
		case <-ctx.Done():
			r.finish()
			return nil
		case ev, ok := <-events:
			if !ok {
				events = nil
				r.show([]string{"the chat's backend stopped"})
				r.finish()
				return nil
			}
			r.event(ev)
		case in := <-ins:
			if in.err != nil {
				r.finish()
				if errors.Is(in.err, io.EOF) {
					return nil
				}
				return fmt.Errorf("read input: %w", in.err)
			}
			if in.long {
				r.fail("", fmt.Errorf("line over %d KiB: not taken", MaxLine>>10))
				continue
			}
			if in.data != nil {
				r.keys(ctx, in.data)
				continue
			}
			r.line(ctx, in.line)
		}
	}
	r.finish()
	return nil
}

// read owns cfg.In: chunks of bytes for the editor, else whole lines.
func (r *repl) read(ins chan<- input, stop <-chan struct{}) {
	send := func(in input) bool {
		select {
		case ins <- in:
			return true
		case <-stop:
			return false
		}
	}
	if r.editing() {
		buf := make([]byte, 256)
		for {
			n, err := r.cfg.In.Read(buf)
			if n > 0 && !send(input{data: append([]byte(nil), buf[:n]...)}) {
				return
			}
			if err != nil {
				send(input{err: err})
				return
			}
		}
	}
	br := bufio.NewReaderSize(r.cfg.In, MaxLine)
	for {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			for errors.Is(err, bufio.ErrBufferFull) { // drop the rest of the line
				_, err = br.ReadSlice('\n')
			}
			if !send(input{long: true}) {
				return
			}
			if err != nil {
				send(input{err: err})
				return
			}
			continue
		}
		if len(b) > 0 {
			if !send(input{line: strings.TrimRight(string(b), "\r\n")}) {
				return
			}
		}
		if err != nil {
			send(input{err: err})
			return
		}
	}
}

// keys feeds terminal bytes to the editor.
func (r *repl) keys(ctx context.Context, data []byte) {
	for _, c := range data {
		k, ok := r.dec.feed(c)
		if !ok {
			continue
		}
		switch k.kind {
		case keyInterrupt:
			if len(r.ed.buf) == 0 {
				r.quit = true
				return
			}
			r.ed.apply(key{kind: keyKillLine})
		case keyEOF:
			if len(r.ed.buf) == 0 {
				r.quit = true
				return
			}
			r.ed.apply(key{kind: keyDelete})
		case keyRedraw:
		case keyEnter:
			line, _ := r.ed.apply(k)
			r.write("\r\x1b[K" + r.prompt() + display.Escape(line) + "\r\n")
			r.line(ctx, line)
			if r.quit {
				return
			}
		default:
			r.ed.apply(k)
		}
		r.redraw()
	}
}

func (r *repl) prompt() string {
	if r.to == "" {
		return "> "
	}
	return display.Escape(r.to) + "> "
}

func (r *repl) width() int {
	if r.cfg.Width != nil {
		if w := r.cfg.Width(); w > 0 {
			return w
		}
	}
	if r.editing() {
		return 80
	}
	return 0
}

func (r *repl) write(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	io.WriteString(r.out, s) //nolint:errcheck // a closed terminal ends the input too
}

func (r *repl) redraw() {
	if r.editing() {
		r.write(r.ed.render(r.prompt(), r.width()))
	}
}

// show prints lines for the person: above the prompt (then redrawn) on
// a terminal, as plain lines otherwise. Lines must be safe already.
func (r *repl) show(lines []string) {
	if len(lines) == 0 {
		return
	}
	if !r.editing() {
		r.write(strings.Join(lines, "\n") + "\n")
		return
	}
	var b strings.Builder
	b.WriteString("\r\x1b[K")
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	b.WriteString(r.ed.render(r.prompt(), r.width()))
	r.write(b.String())
}

// finish leaves the terminal on a fresh line.
func (r *repl) finish() {
	if r.editing() {
		r.write("\r\x1b[K")
	}
}

// line runs one line typed or read.
func (r *repl) line(ctx context.Context, line string) {
	if r.cfg.JSON {
		r.jsonLine(ctx, line)
		return
	}
	if strings.TrimSpace(line) == "" {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	res := r.exec(cctx, line)
	if res.err != nil {
		r.fail(res.cmd, res.err)
		return
	}
	r.show(res.text)
}

func (r *repl) fail(cmd string, err error) {
	if r.cfg.JSON {
		r.jsonResult("", cmd, nil, err)
		return
	}
	r.show([]string{"error: " + display.Escape(err.Error())})
}

// event shows one backend event.
func (r *repl) event(ev Event) {
	if r.cfg.JSON {
		r.jsonEvent(ev)
		return
	}
	r.show(r.eventText(ev))
}

func (r *repl) eventText(ev Event) []string {
	switch {
	case ev.Kind == EventMessage && ev.Message != nil:
		return r.messageText(*ev.Message)
	case ev.Kind == EventDelivery && ev.Delivery != nil:
		d := *ev.Delivery
		if r.shown[d.Ref] == d.State {
			return nil
		}
		r.noteShown(d)
		return []string{deliveryText(d)}
	case ev.Kind == EventLink && ev.Link != nil:
		return []string{linkText(*ev.Link)}
	case ev.Kind == EventNotice && ev.Notice != nil:
		mark := "*"
		if ev.Notice.Level == "warn" {
			mark = "!"
		}
		return []string{mark + " " + display.Escape(ev.Notice.Text)}
	}
	return nil
}

// messageText lays out a message as one block: header, body, continuation
// lines indented, everything the sender chose escaped (node/display).
func (r *repl) messageText(m Message) []string {
	if m.Out {
		to := m.Peer
		if m.Channel != "" {
			to = "#" + m.Channel
		}
		return []string{display.Escape(m.SentAt.Local().Format(display.TimeLayout)) + "  you → " + display.Escape(to) + ": " + display.Escape(m.Text)}
	}
	l := display.Layout{Width: r.width()}
	s := l.Format(display.Message{SentAt: m.SentAt, Channel: m.Channel, From: m.From, FromShort: m.FromCode, Body: m.Text})
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	// Continuation lines get a bar in the indent: a sender's line that
	// copies a header stays visibly inside their message.
	for i := 1; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], display.Indent) {
			lines[i] = continuation + lines[i][len(display.Indent):]
		}
	}
	return lines
}

// continuation starts every line of a message after its header; as wide
// as display.Indent.
const continuation = "  | "

func (r *repl) noteShown(d Delivery) {
	if r.shown == nil || len(r.shown) >= maxShown {
		r.shown = map[uint64]string{}
	}
	r.shown[d.Ref] = d.State
}

// deliveryText is a state change of a message sent: `→ bob "hello" stored`.
func deliveryText(d Delivery) string {
	s := "→ " + display.Escape(d.To) + " " + quoteShort(d.Text) + " " + display.Escape(d.State)
	if d.Reason != "" && d.State == "failed" {
		s += ": " + display.Escape(d.Reason)
	}
	return s
}

// quoteShort is the start of a message's text, escaped, in quotes.
func quoteShort(text string) string {
	const most = 32
	rs := []rune(text)
	if len(rs) > most {
		return `"` + display.Escape(string(rs[:most])) + `…"`
	}
	return `"` + display.Escape(text) + `"`
}

func linkText(l Link) string {
	node := "no node"
	if l.Node != "" {
		node = "node " + display.Escape(l.Node)
		if l.FP != "" {
			node += " (" + display.Escape(l.FP) + ")"
		}
	}
	s := node + ": " + display.Escape(l.State)
	if l.Err != "" && l.State != "connected" {
		s += " — " + display.Escape(l.Err)
	}
	return s
}
