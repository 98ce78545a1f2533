package chat

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/quicproquo/qpq/node/display"
)

// keyKind is what one key press does in the line editor.
type keyKind int

const (
	keyNone keyKind = iota
	keyRune
	keyEnter
	keyBackspace
	keyDelete
	keyLeft
	keyRight
	keyHome
	keyEnd
	keyUp
	keyDown
	keyKillLine  // Ctrl-U: the whole line
	keyKillToEnd // Ctrl-K
	keyKillWord  // Ctrl-W
	keyInterrupt // Ctrl-C
	keyEOF       // Ctrl-D
	keyRedraw    // Ctrl-L
)

// maxSeqLen: an escape sequence longer than this is dropped.
const maxSeqLen = 16

// key is one decoded key press.
type key struct {
	kind keyKind
	r    rune // for keyRune
}

// decoder turns the bytes a terminal in raw mode sends into key presses.
// It keeps state across calls, so a sequence split between reads decodes
// the same. Unknown sequences and control bytes decode to nothing: they
// never reach the line as text.
type decoder struct {
	esc  []byte // an escape sequence being read, starting with ESC
	utf8 []byte // a UTF-8 sequence being read
}

// feed decodes one byte; ok is false while a sequence is incomplete or
// when the byte means nothing.
func (d *decoder) feed(c byte) (k key, ok bool) {
	if len(d.esc) > 0 {
		return d.feedEsc(c)
	}
	if len(d.utf8) > 0 || c >= 0x80 {
		d.utf8 = append(d.utf8, c)
		if !utf8.FullRune(d.utf8) {
			if len(d.utf8) >= utf8.UTFMax {
				d.utf8 = d.utf8[:0]
			}
			return key{}, false
		}
		r, _ := utf8.DecodeRune(d.utf8)
		d.utf8 = d.utf8[:0]
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return key{}, false
		}
		return key{kind: keyRune, r: r}, true
	}
	switch c {
	case 0x1b:
		d.esc = append(d.esc[:0], c)
		return key{}, false
	case '\r', '\n':
		return key{kind: keyEnter}, true
	case 0x7f, 0x08:
		return key{kind: keyBackspace}, true
	case 0x01:
		return key{kind: keyHome}, true
	case 0x05:
		return key{kind: keyEnd}, true
	case 0x02:
		return key{kind: keyLeft}, true
	case 0x06:
		return key{kind: keyRight}, true
	case 0x10:
		return key{kind: keyUp}, true
	case 0x0e:
		return key{kind: keyDown}, true
	case 0x15:
		return key{kind: keyKillLine}, true
	case 0x0b:
		return key{kind: keyKillToEnd}, true
	case 0x17:
		return key{kind: keyKillWord}, true
	case 0x03:
		return key{kind: keyInterrupt}, true
	case 0x04:
		return key{kind: keyEOF}, true
	case 0x0c:
		return key{kind: keyRedraw}, true
	}
	if c < 0x20 {
		return key{}, false
	}
	return key{kind: keyRune, r: rune(c)}, true
}

// feedEsc continues an escape sequence: ESC [ params final, or ESC O x.
func (d *decoder) feedEsc(c byte) (key, bool) {
	d.esc = append(d.esc, c)
	if len(d.esc) == 2 {
		if c == '[' || c == 'O' {
			return key{}, false
		}
		d.esc = d.esc[:0] // Alt-key or a lone ESC: ignored
		return key{}, false
	}
	if c >= 0x40 && c <= 0x7e { // the final byte
		seq := string(d.esc[2:])
		d.esc = d.esc[:0]
		switch seq {
		case "A":
			return key{kind: keyUp}, true
		case "B":
			return key{kind: keyDown}, true
		case "C":
			return key{kind: keyRight}, true
		case "D":
			return key{kind: keyLeft}, true
		case "H", "1~", "7~":
			return key{kind: keyHome}, true
		case "F", "4~", "8~":
			return key{kind: keyEnd}, true
		case "3~":
			return key{kind: keyDelete}, true
		}
		return key{}, false
	}
	if len(d.esc) > maxSeqLen {
		d.esc = d.esc[:0]
	}
	return key{}, false
}

// editor is the line being typed, with the cursor and this session's
// input history.
type editor struct {
	buf     []rune
	pos     int // cursor, 0..len(buf)
	hist    []string
	histPos int    // len(hist) while editing a new line
	saved   string // the new line while browsing history
	max     int    // most runes in a line
}

// maxHistory is how many lines this session's input history keeps.
const maxHistory = 500

// apply performs k; it returns the line on Enter.
func (e *editor) apply(k key) (line string, done bool) {
	switch k.kind {
	case keyRune:
		if len(e.buf) >= e.max {
			return "", false
		}
		e.buf = append(e.buf, 0)
		copy(e.buf[e.pos+1:], e.buf[e.pos:])
		e.buf[e.pos] = k.r
		e.pos++
	case keyBackspace:
		if e.pos > 0 {
			e.buf = append(e.buf[:e.pos-1], e.buf[e.pos:]...)
			e.pos--
		}
	case keyDelete:
		if e.pos < len(e.buf) {
			e.buf = append(e.buf[:e.pos], e.buf[e.pos+1:]...)
		}
	case keyLeft:
		if e.pos > 0 {
			e.pos--
		}
	case keyRight:
		if e.pos < len(e.buf) {
			e.pos++
		}
	case keyHome:
		e.pos = 0
	case keyEnd:
		e.pos = len(e.buf)
	case keyKillLine:
		e.buf, e.pos = e.buf[:0], 0
	case keyKillToEnd:
		e.buf = e.buf[:e.pos]
	case keyKillWord:
		i := e.pos
		for i > 0 && e.buf[i-1] == ' ' {
			i--
		}
		for i > 0 && e.buf[i-1] != ' ' {
			i--
		}
		e.buf = append(e.buf[:i], e.buf[e.pos:]...)
		e.pos = i
	case keyUp:
		if e.histPos > 0 {
			if e.histPos == len(e.hist) {
				e.saved = string(e.buf)
			}
			e.histPos--
			e.set(e.hist[e.histPos])
		}
	case keyDown:
		if e.histPos < len(e.hist) {
			e.histPos++
			if e.histPos == len(e.hist) {
				e.set(e.saved)
			} else {
				e.set(e.hist[e.histPos])
			}
		}
	case keyEnter:
		line = string(e.buf)
		if strings.TrimSpace(line) != "" && (len(e.hist) == 0 || e.hist[len(e.hist)-1] != line) {
			e.hist = append(e.hist, line)
			if len(e.hist) > maxHistory {
				e.hist = e.hist[len(e.hist)-maxHistory:]
			}
		}
		e.histPos, e.saved = len(e.hist), ""
		e.buf, e.pos = e.buf[:0], 0
		return line, true
	}
	return "", false
}

func (e *editor) set(s string) {
	e.buf = []rune(s)
	e.pos = len(e.buf)
}

// render returns the bytes that redraw the prompt line: erase it, write
// the prompt and the part of the line that fits in width columns
// (scrolled so the cursor is visible), then put the cursor back where it
// is in the line. Runes were checked printable when typed.
func (e *editor) render(prompt string, width int) string {
	if width < 10 {
		width = 10
	}
	avail := width - display.Width(prompt) - 1
	if avail < 4 {
		avail = 4
	}
	// Scroll: the window ends at the cursor when the line before the
	// cursor does not fit, else starts at 0.
	start := 0
	cols := 0
	for i := e.pos - 1; i >= 0; i-- {
		cols += runeCols(e.buf[i])
		if cols > avail {
			start = i + 1
			break
		}
	}
	var b strings.Builder
	b.WriteString("\r\x1b[K")
	b.WriteString(prompt)
	cols = 0
	end := start
	for end < len(e.buf) && cols+runeCols(e.buf[end]) <= avail {
		cols += runeCols(e.buf[end])
		end++
	}
	b.WriteString(string(e.buf[start:end]))
	back := 0
	for i := e.pos; i < end; i++ {
		back += runeCols(e.buf[i])
	}
	if back > 0 {
		b.WriteString("\x1b[" + strconv.Itoa(back) + "D")
	}
	return b.String()
}

func runeCols(r rune) int { return display.Width(string(r)) }
