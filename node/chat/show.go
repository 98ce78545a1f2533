package chat

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/quicproquo/qpq/node/display"
)

// showEvent prints one backend event (text) or writes it as JSON.
func (r *repl) showEvent(ev Event) {
	if r.cfg.JSON {
		r.jsonEvent(ev)
		return
	}
	switch {
	case ev.Kind == EventMessage && ev.Message != nil:
		r.print(r.formatMessage(*ev.Message))
	case ev.Kind == EventDelivery && ev.Delivery != nil:
		r.print(deliveryLine(*ev.Delivery))
	case ev.Kind == EventLink && ev.Link != nil:
		r.print(linkLine(*ev.Link))
	case ev.Kind == EventNotice && ev.Notice != nil:
		p := ""
		if ev.Notice.Level == "warn" {
			p = "warning: "
		}
		r.print("* " + p + display.Escape(ev.Notice.Text) + "\n")
	}
}

// formatMessage lays a message out as one safe block (node/display).
// Sent messages (History) are headed "you → PEER".
func (r *repl) formatMessage(m Message) string {
	dm := display.Message{SentAt: m.SentAt, Channel: m.Channel, From: m.From, FromShort: m.FromCode, Body: m.Text}
	if m.SentAt.IsZero() {
		dm.SentAt = m.At
	}
	if dm.FromShort == "" && dm.From == "" {
		dm.FromShort = "unknown"
	}
	if m.Out {
		dm.From = "you"
		if m.Channel == "" {
			dm.From = "you → " + m.Peer
		}
	}
	return r.layout().Format(dm)
}

// snippet is the start of a message's text for one-line states.
func snippet(text string) string {
	const max = 24
	s := display.Escape(strings.ReplaceAll(text, "\n", " "))
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	return string([]rune(s)[:max]) + "…"
}

// deliveryLine is a delivery state change: → bob "hello…" stored.
func deliveryLine(d Delivery) string {
	state := display.Escape(d.State)
	if d.Reason != "" {
		state += ": " + display.Escape(d.Reason)
	}
	return fmt.Sprintf("→ %s %q %s\n", display.Escape(d.To), snippet(d.Text), state)
}

// linkLine is a link change: node ADDR (code): reconnecting — err.
func linkLine(l Link) string {
	var b strings.Builder
	if l.Node == "" {
		b.WriteString("node: ")
	} else {
		b.WriteString("node " + display.Escape(l.Node))
		if l.FP != "" {
			b.WriteString(" (" + display.Escape(l.FP) + ")")
		}
		b.WriteString(": ")
	}
	b.WriteString(display.Escape(l.State))
	if l.Err != "" {
		b.WriteString(" — " + display.Escape(l.Err))
	}
	if l.Mode != "" {
		b.WriteString(" [" + display.Escape(l.Mode) + "]")
	}
	b.WriteByte('\n')
	return b.String()
}
