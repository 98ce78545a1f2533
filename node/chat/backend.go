// Package chat is `qpq chat`'s front end: a line-oriented REPL (a prompt,
// this session's input history, incoming messages printed above the
// prompt without garbling what the person is typing), its slash commands,
// and the --json line protocol for other front ends. It holds no network
// or storage code: everything it shows or does goes through a Backend,
// which node/cmd/qpq implements over the user's home dir, outbox,
// history and node session.
package chat

import (
	"context"
	"time"
)

// Backend is what the chat needs from the user's side of qpq. Calls may
// block on the network; each gets a context the REPL cancels on /quit.
// Errors are shown to the person as they are, so they must read as a
// sentence naming what was wrong ("no contact called bob").
type Backend interface {
	// Events returns the channel of everything that happens without a
	// command: messages received, delivery state changes, link changes,
	// notices. It is closed when the backend is closed.
	Events() <-chan Event

	// SendDM writes text for a contact (name, fingerprint or unique
	// prefix) to the outbox and returns it as queued; its later states
	// arrive as EventDelivery. A contact whose identity changed and was
	// not accepted yet is refused with an error that names both safety
	// numbers' command (`/verify NAME`); nothing is sent.
	SendDM(ctx context.Context, to, text string) (Delivery, error)
	// SendChannel is SendDM for a joined channel (by its local name).
	SendChannel(ctx context.Context, channel, text string) (Delivery, error)

	// Contacts lists the contacts, sorted by name.
	Contacts() ([]Contact, error)
	// Channels lists the joined channels' names, sorted.
	Channels() ([]string, error)
	// History returns the newest n messages kept (all when n <= 0), oldest
	// first, of one conversation: a contact name, "#channel", or "" for
	// all.
	History(name string, n int) ([]Message, error)
	// Status is the node in use, the link state and the outbox counts.
	Status() Status

	// Verify returns the safety number (and QR) of a contact, or of its
	// pending changed identity; with confirm it also records that the
	// person compared it (`/verify NAME ok`), which accepts a pending
	// change.
	Verify(name string, confirm bool) (Verification, error)
	// SetBlocked blocks or unblocks a contact. A blocked contact's
	// messages are not shown (still acknowledged).
	SetBlocked(name string, blocked bool) error

	// Peers browses mDNS on the local links and measures each node found.
	Peers(ctx context.Context) ([]Peer, error)
	// Server switches to one node (`/mesh server ADDR[#FP]`) and stops auto
	// mode. A node never used before without #FP is refused with an error
	// that shows its fingerprint and asks for ADDR#FP: the person confirms
	// a new node by naming its key.
	Server(ctx context.Context, addr string) (Peer, error)
	// Auto picks the lowest-RTT node now, trusted nodes first, and keeps
	// doing so (with hysteresis) until Server is called. It returns the
	// node chosen; new nodes that would be faster are reported as notices
	// asking for `/mesh server ADDR#FP`, never used silently.
	Auto(ctx context.Context) (Peer, error)

	// Route sets how DMs leave (`/route auto|onion|direct`) when mode is
	// not empty, and returns the mode now and how many onion relays the
	// client knows.
	Route(mode string) (string, int, error)

	// Close stops everything the backend runs and closes Events. Safe to
	// call twice.
	Close() error
}

// EventKind says what an Event carries.
type EventKind string

// Event kinds (also the "event" field of --json output).
const (
	EventMessage  EventKind = "message"  // Message is set
	EventDelivery EventKind = "delivery" // Delivery is set
	EventLink     EventKind = "link"     // Link is set
	EventNotice   EventKind = "notice"   // Notice is set
)

// Event is one thing to show.
type Event struct {
	Kind     EventKind `json:"event"`
	Message  *Message  `json:"message,omitempty"`
	Delivery *Delivery `json:"delivery,omitempty"`
	Link     *Link     `json:"link,omitempty"`
	Notice   *Notice   `json:"notice,omitempty"`
}

// Message is a message received (or, in History, sent), with the exact
// text: the REPL neutralises it for the terminal (node/display), --json
// keeps it.
type Message struct {
	ID       string    `json:"id"`                // envelope id, hex
	Out      bool      `json:"out"`               // sent by this user (History only)
	Channel  string    `json:"channel,omitempty"` // local channel name; "" for a direct message
	From     string    `json:"from"`              // contact name; "" when the sender is not a contact
	FromFP   string    `json:"from_fp"`           // the sender's fingerprint, hex
	FromCode string    `json:"from_code"`         // the short code of FromFP
	Peer     string    `json:"peer,omitempty"`    // for a DM: the other person's contact name or short code
	Text     string    `json:"text"`              // exactly as sent
	SentAt   time.Time `json:"sent_at"`           // the sender's clock (not trusted for ordering)
	At       time.Time `json:"at"`                // when received or written here
	Seq      uint64    `json:"seq"`               // the sender's sequence in the conversation; 0 unknown
}

// Delivery is a sent message's delivery state: one of the outbox's
// words, queued, stored, delivered, expired or failed.
type Delivery struct {
	Ref     uint64    `json:"ref"`              // the outbox entry, stable over restarts
	ID      string    `json:"id"`               // envelope id, hex ("" until sealed)
	To      string    `json:"to"`               // contact name or "#channel"
	Text    string    `json:"text"`             // exactly as typed
	State   string    `json:"state"`            // queued | stored | delivered | expired | failed
	Reason  string    `json:"reason,omitempty"` // why, when failed
	Changed time.Time `json:"changed"`
}

// Link is the connection to the node in use.
type Link struct {
	State string `json:"state"`         // connected | connecting | reconnecting | no node
	Node  string `json:"node"`          // ADDR of the node in use or being tried, "" none
	FP    string `json:"fp"`            // its fingerprint short code, "" unknown
	Err   string `json:"err,omitempty"` // the last failure while down
	Mode  string `json:"mode"`          // node choice: "fixed" or "auto"
}

// Notice is a line for the person that is not a message: a gap ("1
// message from alice not yet arrived"), a changed identity, a new node
// found, a warning. Text is safe to show as is (the backend built it).
type Notice struct {
	Level string `json:"level"` // info | warn
	Text  string `json:"text"`
}

// Contact is one contact as /contacts shows it.
type Contact struct {
	Name     string `json:"name"`
	FP       string `json:"fp"`   // hex
	Code     string `json:"code"` // short code
	Verified bool   `json:"verified"`
	Blocked  bool   `json:"blocked"`
	Changed  bool   `json:"changed"` // a new identity was seen for this name and waits for /verify
}

// Status is what /status shows.
type Status struct {
	Link Link `json:"link"`
	// Outbox counts by state word (queued, stored, ...): messages kept in
	// the outbox file.
	Outbox map[string]int `json:"outbox"`
	// History is how many messages the history keeps at most (0: none).
	HistoryLimit int    `json:"history_limit"`
	User         string `json:"user"` // the user's own fingerprint short code
}

// Verification is what /verify shows.
type Verification struct {
	Name    string `json:"name"`
	Number  string `json:"number"`  // the safety number in digit groups
	QR      string `json:"qr"`      // the safety number as a QR code, terminal text
	Changed bool   `json:"changed"` // this is a pending changed identity
	// Old is the safety number of the identity bound before the change.
	Old      string `json:"old,omitempty"`
	Verified bool   `json:"verified"` // recorded as compared (after confirm)
	Accepted bool   `json:"accepted"` // confirm accepted a pending change
}

// Peer is a node found on the local links, or the one switched to.
type Peer struct {
	Addr    string        `json:"addr"`
	FP      string        `json:"fp"`   // hex
	Code    string        `json:"code"` // short code
	Name    string        `json:"name"` // how it was found: "mdns IFACE", "--node", "remembered"
	RTT     time.Duration `json:"rtt_ns"`
	Trusted bool          `json:"trusted"`
	Current bool          `json:"current"` // the node in use
	Err     string        `json:"err,omitempty"`
}
