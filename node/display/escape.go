// Package display renders text that peers supplied (message bodies, and
// anything else a sender chose) for a terminal, so that it cannot forge
// what the user sees: control characters, escape sequences, Unicode
// format characters (bidi overrides, invisible marks) and invalid UTF-8
// are shown visibly escaped (`\x1b`, `\u202e`), and each message is one
// visual block whose continuation lines are indented under its header.
// Both `qpq recv` and the chat client print through it; JSON output keeps
// the exact text and never passes through here.
package display

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxMarks is how many combining marks may follow one another before the
// rest are escaped: long stacks ("zalgo") paint over neighbouring lines.
const maxMarks = 4

// Escape returns s with everything that could move the cursor, change
// the terminal's state, reorder or hide text shown as a visible escape.
// Newlines are escaped too: use Message to lay out multi-line text.
// Backslashes are kept as they are.
func Escape(s string) string {
	var b strings.Builder
	escapeTo(&b, s)
	return b.String()
}

func escapeTo(b *strings.Builder, s string) {
	marks := 0
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n <= 1 {
			fmt.Fprintf(b, `\x%02x`, s[i])
			i++
			marks = 0
			continue
		}
		i += n
		if unicode.Is(unicode.Mn, r) || unicode.Is(unicode.Me, r) {
			marks++
			if marks > maxMarks {
				writeU(b, r)
				continue
			}
			b.WriteRune(r)
			continue
		}
		marks = 0
		if unsafeRune(r) {
			writeEscaped(b, r)
			continue
		}
		b.WriteRune(r)
	}
}

// unsafeRune reports whether r must not reach a terminal as it is.
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20 || r == 0x7f: // C0 (ESC, CR, BS, tab...) and DEL
		return true
	case r >= 0x80 && r <= 0x9f: // C1: CSI, OSC, NEL...
		return true
	case r == 0x200c || r == 0x200d: // ZWNJ, ZWJ: needed by scripts and emoji, cannot reorder
		return false
	case unicode.Is(unicode.Cf, r): // bidi overrides and isolates, invisible marks, tags, BOM
		return true
	case unicode.Is(unicode.Zl, r) || unicode.Is(unicode.Zp, r): // U+2028, U+2029: line breaks to some
		return true
	case unicode.Is(unicode.Co, r) || unicode.Is(unicode.Cs, r): // private use (fonts hide anything there), surrogates
		return true
	case !unicode.IsGraphic(r) && r != ' ': // unassigned and noncharacters
		return true
	}
	return false
}

func writeEscaped(b *strings.Builder, r rune) {
	switch r {
	case '\n':
		b.WriteString(`\n`)
	case '\r':
		b.WriteString(`\r`)
	case '\t':
		b.WriteString(`\t`)
	default:
		if r < 0x80 {
			fmt.Fprintf(b, `\x%02x`, r)
			return
		}
		writeU(b, r)
	}
}

func writeU(b *strings.Builder, r rune) {
	if r > 0xffff {
		fmt.Fprintf(b, `\U%08x`, r)
		return
	}
	fmt.Fprintf(b, `\u%04x`, r)
}
