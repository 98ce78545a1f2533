package chat

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/quicproquo/qpq/node/display"
)

// action is what a key asks of the REPL.
type action int

const (
	actNone   action = iota
	actLine          // Enter: run the line returned
	actQuit          // Ctrl-D or Ctrl-C on an empty line
	actRedraw        // the buffer or cursor changed
)

// keyName names the special keys the decoder recognises.
type keyName int

const (
	kRune keyName = iota // r is a rune or a control byte
	kUp
	kDown
	kLeft
	kRight
	kHome
	kEnd
	kDelete
)

// key is one decoded key press.
type key struct {
	name keyName
	r    rune
}

// maxEscape bounds an escape sequence; longer ones are dropped whole.
const maxEscape = 32

// decoder turns raw terminal bytes into keys. It keeps state across
// reads, since a read may end inside an escape sequence or a UTF-8
// sequence. Unknown sequences are dropped whole, never inserted.
type decoder struct {
	esc     []byte // an escape sequence being read, from ESC
	pending []byte // the start of an incomplete UTF-8 sequence
}

func (d *decoder) feed(b []byte) []key {
	var ks []key
	for _, c := range b {
		if d.esc != nil {
			if k, done := d.escByte(c); done {
				if k.name != kRune || k.r != 0 {
					ks = append(ks, k)
				}
			}
			continue
		}
		if len(d.pending) > 0 {
			if c&0xc0 == 0x80 {
				d.pending = append(d.pending, c)
				if utf8.FullRune(d.pending) {
					r, _ := utf8.DecodeRune(d.pending)
					d.pending = d.pending[:0]
					if r != utf8.RuneError {
						ks = append(ks, key{r: r})
					}
				}
				continue
			}
			d.pending = d.pending[:0] // broken sequence: dropped
		}
		switch {
		case c == 0x1b:
			d.esc = []byte{c}
		case c < 0x80:
			ks = append(ks, key{r: rune(c)})
		case c >= 0xc2 && c <= 0xf4:
			d.pending = append(d.pending, c)
		}
		// other bytes (stray continuation, invalid lead): dropped
	}
	return ks
}

// escByte adds c to the escape sequence; done reports its end, with the
// key it meant (key{} for one that is ignored).
func (d *decoder) escByte(c byte) (key, bool) {
	d.esc = append(d.esc, c)
	end := func(k key) (key, bool) { d.esc = nil; return k, true }
	if len(d.esc) > maxEscape {
		return end(key{})
	}
	if len(d.esc) == 2 {
		switch c {
		case '[', 'O':
			return key{}, false
		}
		return end(key{}) // Alt+key and the like: ignored
	}
	if d.esc[1] == 'O' { // SS3: ESC O x
		return end(finalKey(c, ""))
	}
	if c >= 0x40 && c <= 0x7e { // CSI final byte
		return end(finalKey(c, string(d.esc[2:len(d.esc)-1])))
	}
	if c < 0x20 || c > 0x3f { // not a parameter or intermediate byte
		return end(key{})
	}
	return key{}, false
}

func finalKey(c byte, params string) key {
	switch c {
	case 'A':
		return key{name: kUp}
	case 'B':
		return key{name: kDown}
	case 'C':
		return key{name: kRight}
	case 'D':
		return key{name: kLeft}
	case 'H':
		return key{name: kHome}
	case 'F':
		return key{name: kEnd}
	case '~':
		switch params {
		case "1", "7":
			return key{name: kHome}
		case "4", "8":
			return key{name: kEnd}
		case "3":
			return key{name: kDelete}
		}
	}
	return key{}
}

// maxHistory bounds this session's input history.
const maxHistory = 1000

// editor is the Terminal mode line editor: one line, a cursor, this
// session's history, horizontal scrolling when the line is wider than
// the terminal.
type editor struct {
	dec   decoder
	buf   []rune
	pos   int      // cursor, index into buf
	off   int      // first rune shown (horizontal scroll)
	hist  []string // lines entered, oldest first
	hi    int      // history position; len(hist): the line being typed
	draft string   // the line being typed while browsing history
}

func (e *editor) reset() {
	e.buf, e.pos, e.off = nil, 0, 0
	e.hi, e.draft = len(e.hist), ""
}

func (e *editor) set(s string) {
	e.buf = []rune(s)
	e.pos, e.off = len(e.buf), 0
}

// key applies one key; on actLine it returns the line entered.
func (e *editor) key(k key) (string, action) {
	switch k.name {
	case kLeft:
		if e.pos > 0 {
			e.pos--
		}
		return "", actRedraw
	case kRight:
		if e.pos < len(e.buf) {
			e.pos++
		}
		return "", actRedraw
	case kHome:
		e.pos = 0
		return "", actRedraw
	case kEnd:
		e.pos = len(e.buf)
		return "", actRedraw
	case kDelete:
		if e.pos < len(e.buf) {
			e.buf = append(e.buf[:e.pos], e.buf[e.pos+1:]...)
		}
		return "", actRedraw
	case kUp:
		if e.hi > 0 {
			if e.hi == len(e.hist) {
				e.draft = string(e.buf)
			}
			e.hi--
			e.set(e.hist[e.hi])
		}
		return "", actRedraw
	case kDown:
		if e.hi < len(e.hist) {
			e.hi++
			if e.hi == len(e.hist) {
				e.set(e.draft)
			} else {
				e.set(e.hist[e.hi])
			}
		}
		return "", actRedraw
	}
	switch r := k.r; r {
	case '\r', '\n':
		line := string(e.buf)
		if strings.TrimSpace(line) != "" && (len(e.hist) == 0 || e.hist[len(e.hist)-1] != line) {
			e.hist = append(e.hist, line)
			if len(e.hist) > maxHistory {
				e.hist = e.hist[len(e.hist)-maxHistory:]
			}
		}
		return line, actLine
	case 3: // Ctrl-C
		if len(e.buf) == 0 {
			return "", actQuit
		}
		e.reset()
		return "", actRedraw
	case 4: // Ctrl-D
		if len(e.buf) == 0 {
			return "", actQuit
		}
		return e.key(key{name: kDelete})
	case 1: // Ctrl-A
		return e.key(key{name: kHome})
	case 5: // Ctrl-E
		return e.key(key{name: kEnd})
	case 2: // Ctrl-B
		return e.key(key{name: kLeft})
	case 6: // Ctrl-F
		return e.key(key{name: kRight})
	case 0x15: // Ctrl-U
		e.buf = append([]rune(nil), e.buf[e.pos:]...)
		e.pos = 0
		return "", actRedraw
	case 0x0b: // Ctrl-K
		e.buf = e.buf[:e.pos]
		return "", actRedraw
	case 0x17: // Ctrl-W
		i := e.pos
		for i > 0 && e.buf[i-1] == ' ' {
			i--
		}
		for i > 0 && e.buf[i-1] != ' ' {
			i--
		}
		e.buf = append(e.buf[:i], e.buf[e.pos:]...)
		e.pos = i
		return "", actRedraw
	case 0x0c: // Ctrl-L
		return "", actRedraw
	case 0x7f, 8: // Backspace
		if e.pos > 0 {
			e.buf = append(e.buf[:e.pos-1], e.buf[e.pos:]...)
			e.pos--
		}
		return "", actRedraw
	}
	// Only runes shown as themselves are taken: no control or format
	// characters in a line (Tab and the like are dropped).
	if k.r < 0x20 || display.Escape(string(k.r)) != string(k.r) {
		return "", actNone
	}
	if len(e.buf) >= MaxLine { // runes, so at most 4*MaxLine bytes
		return "", actNone
	}
	e.buf = append(e.buf, 0)
	copy(e.buf[e.pos+1:], e.buf[e.pos:])
	e.buf[e.pos] = k.r
	e.pos++
	return "", actRedraw
}

// render is the bytes that redraw the prompt line: erase it, write the
// prompt and the visible part of the buffer, put the cursor in place.
// The last column stays free so the terminal never wraps the line.
func (e *editor) render(prompt string, width int) string {
	avail := width - display.Width(prompt) - 1
	if avail < 1 {
		avail = 1
	}
	w := func(rs []rune) int { return display.Width(string(rs)) }
	if e.off > e.pos {
		e.off = e.pos
	}
	for e.off < e.pos && w(e.buf[e.off:e.pos]) >= avail {
		e.off++
	}
	end := e.off
	for end < len(e.buf) && w(e.buf[e.off:end+1]) <= avail {
		end++
	}
	var b strings.Builder
	b.WriteString("\r\x1b[K")
	b.WriteString(prompt)
	b.WriteString(string(e.buf[e.off:end]))
	b.WriteString("\r")
	if col := display.Width(prompt) + w(e.buf[e.off:e.pos]); col > 0 {
		b.WriteString("\x1b[" + strconv.Itoa(col) + "C")
	}
	return b.String()
}
