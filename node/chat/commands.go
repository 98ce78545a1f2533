package chat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/quicproquo/qpq/node/display"
)

// helpTopic is one command's /help entry.
type helpTopic struct{ usage, text string }

// help lists the commands in /help order; aliases point to their topic.
var help = []struct {
	name string
	helpTopic
}{
	{"/to", helpTopic{"/to NAME | /to #CHANNEL | /to", "set the current conversation (plain lines go there); alone: clear it"}},
	{"/dm", helpTopic{"/dm CONTACT TEXT", "send TEXT to CONTACT (also /msg, /mesh dm)"}},
	{"/broadcast", helpTopic{"/broadcast CHANNEL TEXT", "send TEXT to a joined channel (also /mesh broadcast)"}},
	{"/contacts", helpTopic{"/contacts", "list contacts (verified, blocked, changed identity)"}},
	{"/channels", helpTopic{"/channels", "list joined channels"}},
	{"/history", helpTopic{"/history [NAME] [N]", "show the last N (default 20) kept messages, of NAME or #CHANNEL or all"}},
	{"/status", helpTopic{"/status", "node in use, link state, node choice, outbox counts, history limit"}},
	{"/verify", helpTopic{"/verify NAME [ok]", "show NAME's safety number and QR; with ok: record it compared (accepts a changed identity)"}},
	{"/block", helpTopic{"/block NAME", "hide NAME's messages (still acknowledged)"}},
	{"/unblock", helpTopic{"/unblock NAME", "show NAME's messages again"}},
	{"/mesh", helpTopic{"/mesh peers | server ADDR[#FP] | auto | dm CONTACT TEXT | broadcast CHANNEL TEXT",
		"peers: nodes found on the local links; server: use one node (a new node needs #FP); auto: keep the lowest-RTT trusted node"}},
	{"/help", helpTopic{"/help [COMMAND]", "list commands, or explain one"}},
	{"/quit", helpTopic{"/quit", "leave (also Ctrl-D on an empty line)"}},
}

var aliases = map[string]string{"/msg": "/dm", "/mesh dm": "/dm", "/mesh broadcast": "/broadcast"}

// helpText is /help's output, or one command's with topic.
func helpText(topic string) (string, error) {
	var b strings.Builder
	if topic == "" {
		b.WriteString("commands (a line not starting with / goes to the current conversation):\n")
		for _, h := range help {
			fmt.Fprintf(&b, "  %s\n      %s\n", h.usage, h.text)
		}
		return b.String(), nil
	}
	if !strings.HasPrefix(topic, "/") {
		topic = "/" + topic
	}
	if a, ok := aliases[topic]; ok {
		topic = a
	}
	for _, h := range help {
		if h.name == topic {
			return h.usage + "\n    " + h.text + "\n", nil
		}
	}
	return "", fmt.Errorf("no command %s: /help lists them", topic)
}

// splitCmd splits a line into its first n fields and the rest, which
// keeps its inner spacing (a message's text).
func splitCmd(line string, n int) (fields []string, rest string) {
	s := strings.TrimLeft(line, " \t")
	for len(fields) < n && s != "" {
		i := strings.IndexAny(s, " \t")
		if i < 0 {
			fields = append(fields, s)
			s = ""
			break
		}
		fields = append(fields, s[:i])
		s = strings.TrimLeft(s[i:], " \t")
	}
	return fields, s
}

// parsed is one input line as a command.
type parsed struct {
	cmd  string   // "/dm", ..., or "" for text to the conversation
	args []string // the command's words
	text string   // a message's text, exactly
}

// parse reads a line in the REPL's syntax; it never fails: unknown
// commands are left for run to refuse.
func parse(line string) parsed {
	if !strings.HasPrefix(strings.TrimLeft(line, " \t"), "/") {
		return parsed{text: line}
	}
	f, _ := splitCmd(line, 1)
	cmd := f[0]
	if cmd == "/mesh" {
		g, _ := splitCmd(line, 2)
		if len(g) == 2 {
			switch g[1] {
			case "dm", "msg":
				cmd = "/dm"
				f, rest := splitCmd(line, 3)
				return textCmd(cmd, f[2:], rest)
			case "broadcast":
				f, rest := splitCmd(line, 3)
				return textCmd("/broadcast", f[2:], rest)
			}
		}
	}
	if a, ok := aliases[cmd]; ok {
		cmd = a
	}
	switch cmd {
	case "/dm", "/broadcast":
		f, rest := splitCmd(line, 2)
		return textCmd(cmd, f[1:], rest)
	}
	return parsed{cmd: cmd, args: strings.Fields(line)[1:]}
}

func textCmd(cmd string, f []string, rest string) parsed {
	if len(f) == 0 {
		return parsed{cmd: cmd}
	}
	return parsed{cmd: cmd, args: f, text: rest}
}

// result is one command's outcome, as text or as a --json result.
type jsonResult struct {
	Event string `json:"event"`
	ID    string `json:"id"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Data  any    `json:"data,omitempty"`
}

func (r *repl) result(id string, res jsonResult) {
	res.Event, res.ID, res.OK = "result", id, res.Error == ""
	b, err := json.Marshal(res)
	if err != nil {
		b, _ = json.Marshal(jsonResult{Event: "result", ID: id, Error: "encode result: " + err.Error()})
	}
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
	b, err := json.Marshal(map[string]any{"event": string(ev.Kind), "data": v})
	if err != nil {
		return
	}
	r.w.Write(append(b, '\n'))
}

// jsonLine runs one --json input line: {"id":..,"cmd":..} or a bare
// command line.
func (r *repl) jsonLine(ctx context.Context, line string) {
	if !strings.HasPrefix(strings.TrimSpace(line), "{") {
		r.command(ctx, "", line)
		return
	}
	var in struct {
		ID  json.RawMessage `json:"id"`
		Cmd *string         `json:"cmd"`
	}
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		r.fail("", fmt.Errorf("bad JSON command (want {\"id\":\"ID\",\"cmd\":\"/COMMAND ...\"}): %w", err))
		return
	}
	id := ""
	if len(in.ID) > 0 {
		var s string
		if json.Unmarshal(in.ID, &s) == nil {
			id = s
		} else {
			id = string(in.ID) // a number or other JSON value, as written
		}
	}
	if in.Cmd == nil {
		r.fail(id, errors.New("bad JSON command: no \"cmd\" field"))
		return
	}
	r.command(ctx, id, *in.Cmd)
}

// command runs one line and shows its outcome (text) or result (JSON).
func (r *repl) command(ctx context.Context, id, line string) {
	if strings.TrimSpace(line) == "" {
		if r.cfg.JSON {
			r.fail(id, errors.New("empty command"))
		}
		return
	}
	data, text, err := r.run(ctx, parse(line))
	if err != nil {
		r.fail(id, err)
		return
	}
	if r.cfg.JSON {
		r.result(id, jsonResult{Data: data})
		return
	}
	r.print(text)
}

var errUsage = errors.New("usage")

// run executes one command; text is what the person sees (already safe).
func (r *repl) run(ctx context.Context, p parsed) (data any, text string, err error) {
	defer func() {
		if errors.Is(err, errUsage) {
			h, _ := helpText(p.cmd)
			err = fmt.Errorf("usage: %s", strings.SplitN(h, "\n", 2)[0])
		}
	}()
	a := p.args
	switch p.cmd {
	case "":
		if r.to == "" {
			return nil, "", errors.New("no conversation: /to NAME first")
		}
		return r.send(ctx, r.to, p.text)
	case "/quit":
		r.quit = true
		return nil, "", nil
	case "/help":
		if len(a) > 1 {
			return nil, "", errUsage
		}
		t := ""
		if len(a) == 1 {
			t = a[0]
		}
		h, err := helpText(t)
		return h, h, err
	case "/dm":
		if len(a) == 0 || p.text == "" {
			return nil, "", errUsage
		}
		return r.send(ctx, a[0], p.text)
	case "/broadcast":
		if len(a) == 0 || p.text == "" {
			return nil, "", errUsage
		}
		return r.send(ctx, "#"+strings.TrimPrefix(a[0], "#"), p.text)
	case "/to":
		if len(a) > 1 {
			return nil, "", errUsage
		}
		r.to = ""
		if len(a) == 1 {
			r.to = a[0]
			return map[string]string{"to": r.to}, "talking to " + display.Escape(r.to) + "\n", nil
		}
		return map[string]string{"to": ""}, "no conversation\n", nil
	case "/contacts":
		cs, err := r.b.Contacts()
		if err != nil {
			return nil, "", fmt.Errorf("contacts: %w", err)
		}
		return cs, contactsText(cs), nil
	case "/channels":
		chs, err := r.b.Channels()
		if err != nil {
			return nil, "", fmt.Errorf("channels: %w", err)
		}
		if len(chs) == 0 {
			return chs, "no channels joined\n", nil
		}
		var b strings.Builder
		for _, c := range chs {
			b.WriteString("#" + display.Escape(c) + "\n")
		}
		return chs, b.String(), nil
	case "/history":
		name, n := "", 20
		for _, s := range a {
			if v, err := strconv.Atoi(s); err == nil && v > 0 {
				n = v
			} else if name == "" {
				name = s
			} else {
				return nil, "", errUsage
			}
		}
		ms, err := r.b.History(name, n)
		if err != nil {
			return nil, "", fmt.Errorf("history: %w", err)
		}
		if len(ms) == 0 {
			return ms, "no messages kept\n", nil
		}
		var b strings.Builder
		for _, m := range ms {
			b.WriteString(r.formatMessage(m))
		}
		return ms, b.String(), nil
	case "/status":
		if len(a) != 0 {
			return nil, "", errUsage
		}
		st := r.b.Status()
		return st, statusText(st), nil
	case "/verify":
		if len(a) == 0 || len(a) > 2 || (len(a) == 2 && a[1] != "ok") {
			return nil, "", errUsage
		}
		v, err := r.b.Verify(a[0], len(a) == 2)
		if err != nil {
			return nil, "", err
		}
		return v, verifyText(a[0], v, len(a) == 2), nil
	case "/block", "/unblock":
		if len(a) != 1 {
			return nil, "", errUsage
		}
		block := p.cmd == "/block"
		if err := r.b.SetBlocked(a[0], block); err != nil {
			return nil, "", err
		}
		word := "blocked"
		if !block {
			word = "unblocked"
		}
		return map[string]any{"name": a[0], "blocked": block}, display.Escape(a[0]) + " " + word + "\n", nil
	case "/mesh":
		if len(a) == 0 {
			return nil, "", errUsage
		}
		switch a[0] {
		case "peers":
			ps, err := r.b.Peers(ctx)
			if err != nil {
				return nil, "", fmt.Errorf("mesh peers: %w", err)
			}
			return ps, peersText(ps), nil
		case "server":
			if len(a) != 2 {
				return nil, "", errUsage
			}
			pe, err := r.b.Server(ctx, a[1])
			if err != nil {
				return nil, "", err
			}
			return pe, "using node " + peerLine(pe) + "\n", nil
		case "auto":
			if len(a) != 1 {
				return nil, "", errUsage
			}
			pe, err := r.b.Auto(ctx)
			if err != nil {
				return nil, "", err
			}
			return pe, "auto: using node " + peerLine(pe) + "\n", nil
		}
		return nil, "", errUsage
	}
	return nil, "", fmt.Errorf("unknown command %s: /help lists them", display.Escape(p.cmd))
}

func (r *repl) send(ctx context.Context, to, text string) (Delivery, string, error) {
	var d Delivery
	var err error
	if strings.HasPrefix(to, "#") {
		d, err = r.b.SendChannel(ctx, to[1:], text)
	} else {
		d, err = r.b.SendDM(ctx, to, text)
	}
	if err != nil {
		return d, "", err
	}
	if d.To == "" {
		d.To = to
	}
	body := display.Escape(text)
	return d, fmt.Sprintf("you → %s: %s  [%s]\n", display.Escape(d.To), body, display.Escape(d.State)), nil
}

func table(rows [][]string) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, row := range rows {
		for i, c := range row {
			row[i] = display.Escape(c)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	tw.Flush()
	return b.String()
}

func yes(b bool, word string) string {
	if b {
		return word
	}
	return ""
}

func contactsText(cs []Contact) string {
	if len(cs) == 0 {
		return "no contacts\n"
	}
	rows := [][]string{{"NAME", "CODE", "VERIFIED", "STATE"}}
	for _, c := range cs {
		state := yes(c.Blocked, "blocked")
		if c.Changed {
			state = strings.TrimSpace(state + " identity changed: /verify " + c.Name)
		}
		rows = append(rows, []string{c.Name, c.Code, yes(c.Verified, "yes"), state})
	}
	return table(rows)
}

func peersText(ps []Peer) string {
	if len(ps) == 0 {
		return "no nodes found\n"
	}
	rows := [][]string{{"", "FOUND BY", "ADDRESS", "CODE", "RTT", "TRUSTED", "ERROR"}}
	for _, p := range ps {
		rtt := ""
		if p.RTT > 0 {
			rtt = p.RTT.Round(100 * time.Microsecond).String()
		}
		rows = append(rows, []string{yes(p.Current, "*"), p.Name, p.Addr, p.Code, rtt, yes(p.Trusted, "yes"), p.Err})
	}
	return table(rows)
}

func peerLine(p Peer) string {
	s := display.Escape(p.Addr)
	if p.Code != "" {
		s += " (" + display.Escape(p.Code) + ")"
	}
	if p.RTT > 0 {
		s += " rtt " + p.RTT.Round(100*time.Microsecond).String()
	}
	return s
}

func statusText(st Status) string {
	var b strings.Builder
	b.WriteString(linkLine(st.Link))
	if st.User != "" {
		b.WriteString("you: " + display.Escape(st.User) + "\n")
	}
	mode := st.Link.Mode
	if mode == "" {
		mode = "fixed"
	}
	b.WriteString("mode: " + display.Escape(mode) + "\n")
	words := make([]string, 0, len(st.Outbox))
	for w := range st.Outbox {
		words = append(words, w)
	}
	sort.Strings(words)
	b.WriteString("outbox:")
	if len(words) == 0 {
		b.WriteString(" empty")
	}
	for _, w := range words {
		fmt.Fprintf(&b, " %d %s", st.Outbox[w], display.Escape(w))
	}
	b.WriteString("\n")
	if st.HistoryLimit > 0 {
		fmt.Fprintf(&b, "history: keeps %d messages\n", st.HistoryLimit)
	} else {
		b.WriteString("history: keeps none\n")
	}
	return b.String()
}

func verifyText(name string, v Verification, confirm bool) string {
	var b strings.Builder
	n := display.Escape(name)
	switch {
	case confirm && v.Accepted:
		b.WriteString("accepted the new identity of " + n + " (safety number " + display.Escape(v.Number) + ")\n")
		return b.String()
	case confirm:
		b.WriteString(n + " verified (safety number " + display.Escape(v.Number) + ")\n")
		return b.String()
	case v.Changed:
		b.WriteString("warning: the identity of " + n + " changed; nothing is sent to " + n + " until you accept it\n")
		b.WriteString("  old safety number: " + display.Escape(v.Old) + "\n")
		b.WriteString("  new safety number: " + display.Escape(v.Number) + "\n")
	default:
		b.WriteString("safety number with " + n + ": " + display.Escape(v.Number) + yes(v.Verified, "  (verified)") + "\n")
	}
	if v.QR != "" {
		for _, l := range strings.Split(strings.TrimRight(v.QR, "\n"), "\n") {
			b.WriteString(display.Escape(l) + "\n")
		}
	}
	b.WriteString("compare it with " + n + " in person, then: /verify " + n + " ok\n")
	return b.String()
}
