package chat

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// The --json line protocol, for front ends other than a terminal.
//
// Input: one command per line, either as a person types it
// (`/dm bob hello`, or plain text for the current conversation), or as
// a JSON object {"id": "any string", "cmd": "/dm bob hello"} whose id
// comes back in the reply. Lines are at most MaxLine bytes.
//
// Output: one JSON object per line, with the exact text (never escaped
// for a terminal), each with an "event" field naming the object beside
// it:
//
//	{"event":"message", "message":{"id", "channel", "from", "from_fp", "from_code", "text", "sent_at", "at", "seq"}}
//	{"event":"delivery", "delivery":{"ref", "id", "to", "text", "state", "reason", "changed"}}
//	   state is queued, stored, delivered, expired or failed (with reason)
//	{"event":"link", "link":{"state", "node", "fp", "mode", "err"}}
//	   state is connected, connecting, reconnecting or "no node"
//	{"event":"notice", "notice":{"level": "info"|"warn", "text"}}
//	{"event":"result", "id", "cmd", "ok": true|false, "error", "data"}
//	   one per command read; data is what the command returns: the
//	   delivery of a sent message (/dm, /broadcast, plain text), the
//	   contacts, channels, history messages, status, verification or peers.
//
// A line that is not valid JSON where an object was meant gets a result
// with ok false naming what was wrong; the chat goes on.

// jsonIn is a command line as a JSON object.
type jsonIn struct {
	ID  string `json:"id"`
	Cmd string `json:"cmd"`
}

// jsonResult is the reply to one command.
type jsonResult struct {
	Event string `json:"event"`
	ID    string `json:"id,omitempty"`
	Cmd   string `json:"cmd,omitempty"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Data  any    `json:"data,omitempty"`
}

func (r *repl) jsonLine(ctx context.Context, line string) {
	trimmed := strings.TrimSpace(line)
	if trimmed == "" {
		return
	}
	id, cmd := "", line
	if strings.HasPrefix(trimmed, "{") {
		var in jsonIn
		dec := json.NewDecoder(strings.NewReader(trimmed))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			r.jsonResult("", "", nil, fmt.Errorf("bad JSON command (want {\"id\": ..., \"cmd\": \"/dm bob hi\"}): %v", err))
			return
		}
		if strings.TrimSpace(in.Cmd) == "" {
			r.jsonResult(in.ID, "", nil, fmt.Errorf("JSON command without \"cmd\""))
			return
		}
		id, cmd = in.ID, in.Cmd
	}
	cctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	res := r.exec(cctx, cmd)
	if res.data == nil && res.err == nil && len(res.text) > 0 {
		res.data = map[string][]string{"lines": res.text} // /help and the like
	}
	r.jsonResult(id, res.cmd, res.data, res.err)
}

func (r *repl) jsonResult(id, cmd string, data any, err error) {
	out := jsonResult{Event: "result", ID: id, Cmd: cmd, OK: err == nil, Data: data}
	if err != nil {
		out.Error = err.Error()
	}
	r.writeJSON(out)
}

// jsonEvent writes an event as {"event": KIND, KIND: {...}}.
func (r *repl) jsonEvent(ev Event) {
	r.writeJSON(ev)
}

func (r *repl) writeJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(jsonResult{Event: "result", Error: "cannot encode the reply: " + err.Error()})
	}
	r.write(string(b) + "\n")
}
