package chat

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/quicproquo/qpq/node/display"
)

// result is what one command did: text for a person, data for --json.
type result struct {
	cmd  string
	text []string // safe to show
	data any
	err  error
}

// command is one slash command.
type command struct {
	name    string
	args    string // synopsis of the arguments
	about   string // one line for /help
	more    string // more for /help NAME
	aliases []string
	run     func(r *repl, ctx context.Context, args string) result
}

var commandList []command

func init() {
	commandList = []command{
		{name: "/to", args: "[NAME | #CHANNEL]", about: "talk to NAME (or post to #CHANNEL): plain lines go there; /to alone stops", run: (*repl).cmdTo},
		{name: "/dm", args: "CONTACT TEXT", about: "send TEXT to CONTACT (a name, fingerprint or unique prefix)", aliases: []string{"/msg"}, run: (*repl).cmdDM},
		{name: "/broadcast", args: "CHANNEL TEXT", about: "post TEXT to a channel you joined", run: (*repl).cmdBroadcast},
		{name: "/contacts", about: "list your contacts (verified, blocked, identity changed)", run: (*repl).cmdContacts},
		{name: "/channels", about: "list the channels you joined", run: (*repl).cmdChannels},
		{name: "/history", args: "[NAME | #CHANNEL] [N]", about: "show the newest N messages kept (default 20), of one conversation or all", run: (*repl).cmdHistory},
		{name: "/status", about: "the node in use, the link, the outbox and the history", run: (*repl).cmdStatus},
		{name: "/verify", args: "NAME [ok]", about: "show NAME's safety number and QR; /verify NAME ok records you compared it (and accepts a changed identity)", run: (*repl).cmdVerify},
		{name: "/block", args: "NAME", about: "hide NAME's messages (they are still acknowledged, so the mesh deletes them)", run: (*repl).cmdBlock},
		{name: "/unblock", args: "NAME", about: "show NAME's messages again", run: (*repl).cmdUnblock},
		{name: "/mesh", args: "peers | server ADDR[#FP] | auto | dm CONTACT TEXT | broadcast CHANNEL TEXT", about: "nodes: list those found by mDNS, pick one, or pick the lowest RTT automatically",
			more: "/mesh peers lists the nodes found by mDNS on your links (name, address, fingerprint, RTT; * marks the one in use).\n" +
				"/mesh server ADDR[#FP] uses that node from now on; a node never used before needs its #FP, which confirms it.\n" +
				"/mesh auto picks the lowest-RTT node now and keeps doing so, trusted nodes first; a new node is only shown.\n" +
				"/mesh dm and /mesh broadcast are /dm and /broadcast.", run: (*repl).cmdMesh},
		{name: "/route", args: "[auto | onion | direct]", about: "how your DMs leave: by onion through three relays, directly, or auto (onion when 3 relays are known)",
			more: "/route onion sends each DM through three relays you pick among the nodes you learnt, none of them your node: each sees only the one before and after, so no node can tie the DM to where you sit; stored then means the last relay said it stored it. Without three relays a DM stays queued.\n" +
				"/route direct hands DMs to your node. /route auto (the default) uses onion routes when three relays are known besides your node, else directly, and says which for each DM.\n" +
				"/route alone shows the mode and how many relays are known. Channel messages always go directly.", run: (*repl).cmdRoute},
		{name: "/help", args: "[COMMAND]", about: "list the commands, or explain one", run: (*repl).cmdHelp},
		{name: "/quit", about: "leave the chat (messages not sent yet stay in the outbox)", aliases: []string{"/exit"}, run: (*repl).cmdQuit},
	}
}

func lookup(name string) (command, bool) {
	for _, c := range commandList {
		if c.name == name {
			return c, true
		}
		for _, a := range c.aliases {
			if a == name {
				return c, true
			}
		}
	}
	return command{}, false
}

// exec runs one line: a slash command, or text for the current
// conversation ("//text" sends "/text").
func (r *repl) exec(ctx context.Context, line string) result {
	trimmed := strings.TrimSpace(line)
	if !strings.HasPrefix(trimmed, "/") || strings.HasPrefix(trimmed, "//") {
		text := line
		if strings.HasPrefix(trimmed, "//") {
			text = strings.TrimPrefix(trimmed, "/")
		}
		if r.to == "" {
			return result{err: errors.New("no conversation: /to NAME first (or /dm NAME TEXT)")}
		}
		if strings.HasPrefix(r.to, "#") {
			return r.send(ctx, "/broadcast", strings.TrimPrefix(r.to, "#"), text, true)
		}
		return r.send(ctx, "/dm", r.to, text, false)
	}
	// The text of /dm and /broadcast is kept exactly, trailing blanks too.
	name, args, _ := strings.Cut(strings.TrimLeft(line, " \t"), " ")
	c, ok := lookup(strings.ToLower(strings.TrimRight(name, "\r\t")))
	if !ok {
		return result{cmd: name, err: fmt.Errorf("unknown command %s: /help lists them", name)}
	}
	if c.name != "/dm" && c.name != "/broadcast" && c.name != "/mesh" {
		args = strings.TrimSpace(args)
	}
	res := c.run(r, ctx, strings.TrimLeft(args, " "))
	res.cmd = c.name
	return res
}

func (r *repl) cmdTo(_ context.Context, args string) result {
	if strings.ContainsAny(args, " \t") {
		return result{err: errors.New("/to takes one name: /to bob, or /to #channel")}
	}
	r.to = args
	if args == "" {
		return result{text: []string{"no conversation: use /to NAME or /dm NAME TEXT"}, data: map[string]string{"to": ""}}
	}
	return result{text: []string{"talking to " + display.Escape(args) + ": plain lines go there"}, data: map[string]string{"to": args}}
}

func (r *repl) cmdDM(ctx context.Context, args string) result {
	to, text, ok := strings.Cut(args, " ")
	if !ok || strings.TrimSpace(text) == "" {
		return result{err: errors.New("/dm CONTACT TEXT: give a contact and the text")}
	}
	return r.send(ctx, "/dm", to, strings.TrimLeft(text, " "), false)
}

func (r *repl) cmdBroadcast(ctx context.Context, args string) result {
	ch, text, ok := strings.Cut(args, " ")
	if !ok || strings.TrimSpace(text) == "" {
		return result{err: errors.New("/broadcast CHANNEL TEXT: give a channel and the text")}
	}
	return r.send(ctx, "/broadcast", strings.TrimPrefix(ch, "#"), strings.TrimLeft(text, " "), true)
}

// send hands text to the backend and shows it as the person's own line
// with its first state.
func (r *repl) send(ctx context.Context, cmd, to, text string, channel bool) result {
	var d Delivery
	var err error
	shown := to
	if channel {
		d, err = r.b.SendChannel(ctx, to, text)
		shown = "#" + to
	} else {
		d, err = r.b.SendDM(ctx, to, text)
	}
	if err != nil {
		return result{cmd: cmd, err: err}
	}
	if d.To != "" {
		shown = d.To
	}
	r.noteShown(d)
	return result{cmd: cmd, data: d, text: []string{"you → " + display.Escape(shown) + ": " + display.Escape(text) + "  [" + display.Escape(d.State) + "]"}}
}

func (r *repl) cmdContacts(context.Context, string) result {
	cs, err := r.b.Contacts()
	if err != nil {
		return result{err: err}
	}
	if len(cs) == 0 {
		return result{data: cs, text: []string{"no contacts yet: qpq contact add FINGERPRINT NAME (or a share)"}}
	}
	var lines []string
	for _, c := range cs {
		var marks []string
		if c.Verified {
			marks = append(marks, "verified")
		}
		if c.Blocked {
			marks = append(marks, "blocked")
		}
		if c.Changed {
			marks = append(marks, "IDENTITY CHANGED: /verify "+c.Name)
		}
		line := fmt.Sprintf("%-16s %s", display.Escape(c.Name), display.Escape(c.Code))
		if len(marks) > 0 {
			line += "  " + display.Escape(strings.Join(marks, ", "))
		}
		lines = append(lines, line)
	}
	return result{data: cs, text: lines}
}

func (r *repl) cmdChannels(context.Context, string) result {
	chs, err := r.b.Channels()
	if err != nil {
		return result{err: err}
	}
	if len(chs) == 0 {
		return result{data: chs, text: []string{"no channels: qpq channel new NAME, or qpq channel join SHARE"}}
	}
	lines := make([]string, len(chs))
	for i, c := range chs {
		lines[i] = "#" + display.Escape(c)
	}
	return result{data: chs, text: lines}
}

// defaultHistory is how many messages /history shows without N.
const defaultHistory = 20

func (r *repl) cmdHistory(_ context.Context, args string) result {
	name, n := "", defaultHistory
	for _, f := range strings.Fields(args) {
		if v, err := strconv.Atoi(f); err == nil {
			if v < 1 {
				return result{err: fmt.Errorf("/history N: %d is not a positive number", v)}
			}
			n = v
			continue
		}
		if name != "" {
			return result{err: errors.New("/history [NAME | #CHANNEL] [N]: one name at most")}
		}
		name = f
	}
	ms, err := r.b.History(name, n)
	if err != nil {
		return result{err: err}
	}
	if len(ms) == 0 {
		return result{data: ms, text: []string{"no messages kept"}}
	}
	var lines []string
	for _, m := range ms {
		lines = append(lines, r.messageText(m)...)
	}
	return result{data: ms, text: lines}
}

func (r *repl) cmdStatus(context.Context, string) result {
	st := r.b.Status()
	lines := []string{linkText(st.Link)}
	if st.Link.Mode != "" {
		lines[0] += "  [" + display.Escape(st.Link.Mode) + "]"
	}
	var parts []string
	for _, s := range []string{"queued", "stored", "delivered", "expired", "failed"} {
		if n := st.Outbox[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	if len(parts) == 0 {
		parts = []string{"empty"}
	}
	lines = append(lines, "outbox: "+strings.Join(parts, ", "))
	if st.HistoryLimit == 0 {
		lines = append(lines, "history: keeps none")
	} else {
		lines = append(lines, fmt.Sprintf("history: keeps the newest %d", st.HistoryLimit))
	}
	if st.User != "" {
		lines = append(lines, "you: "+display.Escape(st.User))
	}
	if r.to != "" {
		lines = append(lines, "talking to: "+display.Escape(r.to))
	}
	return result{data: st, text: lines}
}

func (r *repl) cmdVerify(_ context.Context, args string) result {
	f := strings.Fields(args)
	if len(f) == 0 || len(f) > 2 || (len(f) == 2 && strings.ToLower(f[1]) != "ok") {
		return result{err: errors.New("/verify NAME [ok]")}
	}
	v, err := r.b.Verify(f[0], len(f) == 2)
	if err != nil {
		return result{err: err}
	}
	name := display.Escape(v.Name)
	var lines []string
	switch {
	case len(f) == 2 && v.Accepted:
		lines = append(lines, "accepted the new identity of "+name+" and marked it verified: messages to "+name+" go out again")
	case len(f) == 2:
		lines = append(lines, name+" is marked verified")
	case v.Changed:
		lines = append(lines, "! the identity of "+name+" CHANGED: nothing is sent to "+name+" until you accept it",
			"  old safety number: "+display.Escape(v.Old),
			"  new safety number: "+display.Escape(v.Number),
			"  compare the new one with "+name+" in person, then: /verify "+name+" ok")
	default:
		lines = append(lines, "safety number with "+name+": "+display.Escape(v.Number))
		if v.Verified {
			lines[0] += "  (verified)"
		} else {
			lines = append(lines, "compare it with "+name+" (or scan the QR), then: /verify "+name+" ok")
		}
	}
	if len(f) == 1 && v.QR != "" {
		for _, l := range strings.Split(strings.TrimRight(v.QR, "\n"), "\n") {
			lines = append(lines, display.Escape(l))
		}
	}
	return result{data: v, text: lines}
}

func (r *repl) cmdBlock(_ context.Context, args string) result   { return r.block(args, true) }
func (r *repl) cmdUnblock(_ context.Context, args string) result { return r.block(args, false) }

func (r *repl) block(name string, blocked bool) result {
	if name == "" || strings.ContainsAny(name, " \t") {
		return result{err: errors.New("give one contact name")}
	}
	if err := r.b.SetBlocked(name, blocked); err != nil {
		return result{err: err}
	}
	if blocked {
		return result{text: []string{display.Escape(name) + " is blocked: their messages are not shown (still acknowledged)"}}
	}
	return result{text: []string{display.Escape(name) + " is unblocked"}}
}

func (r *repl) cmdMesh(ctx context.Context, args string) result {
	sub, full, _ := strings.Cut(args, " ")
	full = strings.TrimLeft(full, " ")
	rest := strings.TrimSpace(full)
	switch strings.ToLower(strings.TrimSpace(sub)) {
	case "peers":
		ps, err := r.b.Peers(ctx)
		if err != nil {
			return result{err: err}
		}
		return result{data: ps, text: peerLines(ps)}
	case "server":
		if rest == "" || strings.ContainsAny(rest, " \t") {
			return result{err: errors.New("/mesh server ADDR[#FP]")}
		}
		p, err := r.b.Server(ctx, rest)
		if err != nil {
			return result{err: err}
		}
		return result{data: p, text: []string{"using node " + peerName(p) + " from now on"}}
	case "auto":
		p, err := r.b.Auto(ctx)
		if err != nil {
			return result{err: err}
		}
		line := "auto: picked node " + peerName(p)
		if p.RTT > 0 {
			line += ", RTT " + p.RTT.Round(100*time.Microsecond).String()
		}
		return result{data: p, text: []string{line + "; re-measured now and then"}}
	case "dm":
		return r.cmdDM(ctx, full)
	case "broadcast":
		return r.cmdBroadcast(ctx, full)
	}
	return result{err: errors.New("/mesh peers | server ADDR[#FP] | auto | dm CONTACT TEXT | broadcast CHANNEL TEXT")}
}

func (r *repl) cmdRoute(_ context.Context, args string) result {
	mode := strings.TrimSpace(args)
	if strings.ContainsAny(mode, " \t") {
		return result{err: errors.New("/route [auto | onion | direct]")}
	}
	now, relays, err := r.b.Route(mode)
	if err != nil {
		return result{err: err}
	}
	line := fmt.Sprintf("route: %s; %d onion relays known", now, relays)
	if mode != "" {
		line = fmt.Sprintf("DMs now leave: %s (%d onion relays known)", now, relays)
	}
	return result{data: map[string]any{"route": now, "relays": relays}, text: []string{line}}
}

func peerName(p Peer) string {
	s := display.Escape(p.Addr)
	if p.Code != "" {
		s += " (" + display.Escape(p.Code) + ")"
	}
	return s
}

func peerLines(ps []Peer) []string {
	if len(ps) == 0 {
		return []string{"no nodes found by mDNS on this machine's links"}
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Current && !ps[j].Current })
	lines := []string{fmt.Sprintf("  %-22s %-12s %-10s %-10s %s", "address", "rtt", "trusted", "found", "fingerprint")}
	for _, p := range ps {
		mark := " "
		if p.Current {
			mark = "*"
		}
		rtt := "-"
		if p.Err != "" {
			rtt = "no answer"
		} else if p.RTT > 0 {
			rtt = p.RTT.Round(100 * time.Microsecond).String()
		}
		trusted := "new"
		if p.Trusted {
			trusted = "trusted"
		}
		lines = append(lines, fmt.Sprintf("%s %-22s %-12s %-10s %-10s %s", mark, display.Escape(p.Addr), rtt, trusted, display.Escape(p.Name), display.Escape(p.Code)))
	}
	return lines
}

func (r *repl) cmdHelp(_ context.Context, args string) result {
	if args != "" {
		name := args
		if !strings.HasPrefix(name, "/") {
			name = "/" + name
		}
		c, ok := lookup(strings.ToLower(name))
		if !ok {
			return result{err: fmt.Errorf("no command %s: /help lists them", name)}
		}
		lines := []string{strings.TrimSpace(c.name + " " + c.args), "  " + c.about}
		if len(c.aliases) > 0 {
			lines = append(lines, "  also: "+strings.Join(c.aliases, ", "))
		}
		for _, l := range strings.Split(c.more, "\n") {
			if l != "" {
				lines = append(lines, "  "+l)
			}
		}
		return result{text: lines}
	}
	return result{text: HelpText()}
}

// HelpText is what /help prints: one line per command.
func HelpText() []string {
	lines := []string{"Type a line to send it to the current conversation (/to NAME). Commands:"}
	for _, c := range commandList {
		lines = append(lines, fmt.Sprintf("  %-44s %s", strings.TrimSpace(c.name+" "+c.args), c.about))
	}
	return append(lines, "/help COMMAND explains one; //text sends a line that starts with /.")
}

func (r *repl) cmdQuit(context.Context, string) result {
	r.quit = true
	return result{}
}
