package chat

// The --json line protocol (Config.JSON), for front ends other than a
// person at a terminal:
//
// Output: one JSON object per line on Out.
//
//	{"event":"message","data":{"ID":"..","Channel":"","From":"alice","FromFP":"..","FromCode":"..","Text":"exact text",...}}
//	{"event":"delivery","data":{"Ref":1,"ID":"..","To":"bob","Text":"hello","State":"stored","Reason":"",...}}
//	{"event":"link","data":{"State":"reconnecting","Node":"127.0.0.1:7443","FP":"..","Err":"..","Mode":"auto"}}
//	{"event":"notice","data":{"Level":"warn","Text":".."}}
//	{"event":"result","id":"ID","ok":true,"data":...}
//	{"event":"result","id":"ID","ok":false,"error":"what was wrong"}
//
// The data of an event is the Backend type of the same name (Message,
// Delivery, Link, Notice) with its Go field names; text is exact, never
// neutralised. Delivery states are queued, stored, delivered, expired,
// failed (with Reason).
//
// Input: one line per command on In, at most MaxLine (64 KiB) bytes:
// either a JSON object {"id":"any","cmd":"/dm bob hello"} whose cmd is a
// line in the REPL's syntax, or such a bare line (its result's id is "").
// Each input line gets exactly one result; its data is the command's:
// /dm, /broadcast and plain lines a Delivery, /contacts []Contact,
// /channels []string, /history []Message, /status Status, /verify
// Verification, /mesh peers []Peer, /mesh server and /mesh auto a Peer,
// /help the help text. Bad JSON (or an unknown field, or no "cmd") and
// an overlong line give a result with ok false and an error naming what
// was wrong.
