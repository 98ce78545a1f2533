package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/quicproquo/qpq/node/display"
)

type action int

const (
	actNone action = iota
	actLine
	actQuit
	actRedraw
)

type key struct{ r rune }

type decoder struct{}

func (d *decoder) feed(b []byte) []key {
	var ks []key
	for _, r := range string(b) {
		ks = append(ks, key{r})
	}
	return ks
}

// editor is the Terminal mode line editor (minimal: insert, Backspace, Enter, Ctrl-D).
type editor struct {
	dec decoder
	buf []rune
}

func (e *editor) reset() { e.buf = nil }

func (e *editor) key(k key) (string, action) {
	switch {
	case k.r == '\r' || k.r == '\n':
		return string(e.buf), actLine
	case k.r == 4 && len(e.buf) == 0:
		return "", actQuit
	case k.r == 0x7f || k.r == 8:
		if len(e.buf) > 0 {
			e.buf = e.buf[:len(e.buf)-1]
		}
		return "", actRedraw
	case k.r >= 0x20:
		e.buf = append(e.buf, k.r)
		return "", actRedraw
	}
	return "", actNone
}

func (e *editor) render(prompt string, width int) string {
	return "\r\x1b[K" + prompt + display.Escape(string(e.buf))
}

type jsonResult struct {
	Event string `json:"event"`
	ID    string `json:"id"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Data  any    `json:"data,omitempty"`
}

func (r *repl) result(id string, res jsonResult) {
	res.Event, res.ID, res.OK = "result", id, res.Error == ""
	b, _ := json.Marshal(res)
	r.w.Write(append(b, '\n'))
}

func (r *repl) jsonEvent(ev Event) {
	var v any
	switch ev.Kind {
	case EventMessage:
		v = ev.Message
	case EventDelivery:
		v = ev.Delivery
	case EventLink:
		v = ev.Link
	case EventNotice:
		v = ev.Notice
	}
	b, _ := json.Marshal(map[string]any{"event": string(ev.Kind), "data": v})
	r.w.Write(append(b, '\n'))
}

func (r *repl) jsonLine(ctx context.Context, line string) {
	if strings.HasPrefix(strings.TrimSpace(line), "{") {
		var in struct{ ID, Cmd string }
		if err := json.Unmarshal([]byte(line), &in); err != nil {
			r.fail("", fmt.Errorf("bad JSON command: %w", err))
			return
		}
		r.command(ctx, in.ID, in.Cmd)
		return
	}
	r.command(ctx, "", line)
}

// command runs one line: a slash command or text for the conversation.
func (r *repl) command(ctx context.Context, id, line string) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return
	}
	rest := func(n int) string {
		s := strings.TrimLeft(line, " ")
		for i := 0; i < n; i++ {
			s = strings.TrimLeft(s[strings.IndexByte(s+" ", ' '):], " ")
		}
		return s
	}
	var data any
	var err error
	switch f[0] {
	case "/quit":
		r.quit = true
	case "/dm", "/msg":
		if len(f) < 3 {
			err = fmt.Errorf("usage: /dm CONTACT TEXT")
			break
		}
		data, err = r.send(ctx, f[1], rest(2))
	case "/to":
		r.to = ""
		if len(f) > 1 {
			r.to = f[1]
		}
	case "/contacts":
		data, err = r.b.Contacts()
	case "/status":
		data = r.b.Status()
	default:
		if strings.HasPrefix(f[0], "/") {
			err = fmt.Errorf("unknown command %s: /help lists them", f[0])
		} else if r.to == "" {
			err = fmt.Errorf("no conversation: /to NAME first")
		} else {
			data, err = r.send(ctx, r.to, line)
		}
	}
	if err != nil {
		r.fail(id, err)
		return
	}
	if r.cfg.JSON {
		r.result(id, jsonResult{Data: data})
		return
	}
	switch d := data.(type) {
	case Delivery:
		r.printf("you → %s: %s   [%s]\n", display.Escape(d.To), display.Escape(d.Text), display.Escape(d.State))
	case []Contact:
		for _, c := range d {
			r.printf("%s  %s\n", display.Escape(c.Name), display.Escape(c.Code))
		}
	case Status:
		r.print(linkLine(d.Link))
	}
}

func (r *repl) send(ctx context.Context, to, text string) (Delivery, error) {
	if strings.HasPrefix(to, "#") {
		return r.b.SendChannel(ctx, to[1:], text)
	}
	return r.b.SendDM(ctx, to, text)
}
