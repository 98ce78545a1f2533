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
	Kind     EventKind
	Message  *Message
	Delivery *Delivery
	Link     *Link
	Notice   *Notice
}

// Message is a message received (or, in History, sent), with the exact
// text: the REPL neutralises it for the terminal (node/display), --json
// keeps it.
type Message struct {
	ID       string    // envelope id, hex
	Out      bool      // sent by this user (History only)
	Channel  string    // local channel name; "" for a direct message
	From     string    // contact name; "" when the sender is not a contact
	FromFP   string    // the sender's fingerprint, hex
	FromCode string    // the short code of FromFP
	Peer     string    // for a DM: the other person's contact name or short code
	Text     string    // exactly as sent
	SentAt   time.Time // the sender's clock (not trusted for ordering)
	At       time.Time // when received or written here
	Seq      uint64    // the sender's sequence in the conversation; 0 unknown
}

// Delivery is a sent message's delivery state: one of the outbox's
// words, queued, stored, delivered, expired or failed.
type Delivery struct {
	Ref     uint64 // the outbox entry, stable over restarts
	ID      string // envelope id, hex ("" until sealed)
	To      string // contact name or "#channel"
	Text    string // exactly as typed
	State   string // queued | stored | delivered | expired | failed
	Reason  string // why, when failed
	Changed time.Time
}

// Link is the connection to the node in use.
type Link struct {
	State string // connected | connecting | reconnecting | no node
	Node  string // ADDR of the node in use or being tried, "" none
	FP    string // its fingerprint short code, "" unknown
	Err   string // the last failure while down
	Mode  string // node choice: "fixed" or "auto"
}

// Notice is a line for the person that is not a message: a gap ("1
// message from alice not yet arrived"), a changed identity, a new node
// found, a warning. Text is safe to show as is (the backend built it).
type Notice struct {
	Level string // info | warn
	Text  string
}

// Contact is one contact as /contacts shows it.
type Contact struct {
	Name     string
	FP       string // hex
	Code     string // short code
	Verified bool
	Blocked  bool
	Changed  bool // a new identity was seen for this name and waits for /verify
}

// Status is what /status shows.
type Status struct {
	Link Link
	// Outbox counts by state word (queued, stored, ...): messages kept in
	// the outbox file.
	Outbox map[string]int
	// History is how many messages the history keeps at most (0: none).
	HistoryLimit int
	User         string // the user's own fingerprint short code
}

// Verification is what /verify shows.
type Verification struct {
	Name    string
	Number  string // the safety number in digit groups
	QR      string // the safety number as a QR code, terminal text
	Changed bool   // this is a pending changed identity
	// Old is the safety number of the identity bound before the change.
	Old      string
	Verified bool // recorded as compared (after confirm)
	Accepted bool // confirm accepted a pending change
}

// Peer is a node found on the local links, or the one switched to.
type Peer struct {
	Addr    string
	FP      string // hex
	Code    string // short code
	Name    string // how it was found: "mdns IFACE", "--node", "remembered"
	RTT     time.Duration
	Trusted bool
	Current bool // the node in use
	Err     string
}
