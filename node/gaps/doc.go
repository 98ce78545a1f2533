// Package gaps tells a reader which messages from a sender have not
// arrived (yet), from the sequence numbers senders seal into their
// messages (e2e.Meta: one counter per sender and conversation, from 1).
//
// A Tracker is fed every opened message. When a sender's number jumps past
// the next one expected, the skipped messages are pending: "1 message from
// alice not yet arrived". A late arrival fills its place. Once the skipped
// message's time to live has surely passed, it is missing: it can no
// longer arrive, since relays drop an envelope when its TTL ends.
//
// When a pending message turns missing is decided on the reader's own
// clock, never the sender's: mesh routers often run without NTP. The
// reader does not know the skipped message's TTL; it takes the TTL of the
// later message that revealed the gap (same sender, same conversation:
// usually the same setting), or MaxTTL when that one gives none, counted
// from when the reader first saw the gap. That bounds it from above: the
// skipped message was sent before the later one, and relays age TTLs by
// time held, so it expired at the latest one TTL after the later one was
// sent, which is before the reader received it.
//
// The tracker assumes one device per identity (qpq's rule for now): a
// sender whose numbers go back while its clock goes forward, or who sends
// two different messages under one number, or whose number leaps by more
// than MaxJump, is taken to have started counting anew (a reinstall, or a
// second device), reported once as Restarted, not as a flood of missing
// messages. The first message seen from a sender in a conversation starts
// the count: earlier numbers are not reported, since the tracker may be
// newer than the conversation or its saved state lost.
//
// Memory is bounded (MaxStreams sender-conversation pairs, MaxGaps gap
// ranges each, the least recently used dropped first) and the state
// serialises with MarshalBinary for the history store.
package gaps
