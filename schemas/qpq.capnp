# qpq wire format: the single source of every structure that crosses a link.
#
# RULE: add fields, never change or reuse them. A field's number, type and
# meaning are fixed once released; retire a field by leaving it unused and
# documenting it as such. New fields get the next ordinal. Old nodes ignore
# fields they do not know, new nodes read an absent field as its default.
#
# Regenerate the Go with `make generate`; `make test` fails when the
# committed Go differs from a fresh generation.

@0xb3458c925f621b95;

using Go = import "/go.capnp";
$Go.package("schemas");
$Go.import("github.com/quicproquo/qpq/schemas");

# Hello opens every link and every client connection: each side states the
# protocol versions it speaks so that old and new nodes can compare them.
# Two sides interoperate when the range [minVersion, version] of each
# overlaps; they then use the lower of the two `version`s.
struct Hello {
  version @0 :UInt16;      # the newest protocol version this side speaks
  minVersion @1 :UInt16;   # the oldest protocol version this side still speaks
  software @2 :Text;       # free-form build string, e.g. "qpq 0.1.0 (go1.26.8 linux/mips)"; informational only
  domain @3 :Text;         # the mesh domain this side belongs to ("qpq" by default)
  decoyRate @4 :Float32;   # mean cover cells/s this side sends per link (0: off); from protocol 6
}

# Health answers the periodic liveness probe on a link; its round trip is
# the link's RTT sample.
struct Health {
  uptimeSeconds @0 :UInt64; # seconds since the answering node started
  links @1 :UInt32;         # node-to-node links the answering node has up
}

# Envelope is the unit of store and forward. Relays see only these fields;
# everything about sender and content is inside the sealed payload.
struct Envelope {
  # id is SHA-256 over a domain label and the immutable fields (kind,
  # destination, receiptTag, payload), so any relay can recompute and check
  # it. ttlSeconds and hopLimit change per hop and are not part of it.
  id @0 :Data;

  kind @1 :Kind;

  # destination: a user fingerprint (dm, bundle), a channel id (broadcast),
  # a node fingerprint (onion, descriptor), or empty (decoy); 32 bytes.
  destination @2 :Data;

  # ttlSeconds is the remaining time to live. Each node subtracts how long it
  # held the envelope (monotonic clock) before passing it on, and caps a
  # received value to its own maximum. Never a wall-clock timestamp.
  ttlSeconds @3 :UInt32;

  # hopLimit counts the node-to-node forwards still allowed; decremented on
  # every forward, capped to the receiving node's maximum. At zero the
  # envelope is kept for local delivery only.
  hopLimit @4 :UInt8;

  # receiptTag is H(k) for the receipt secret k sealed inside a dm; empty
  # for other kinds. A receipt revealing k deletes every copy tagged H(k).
  receiptTag @5 :Data;

  # payload is opaque to relays; its length is a multiple of 256 bytes.
  payload @6 :Data;

  enum Kind {
    dm @0;          # a sealed direct message to one user
    broadcast @1;   # a channel message, AEAD under the channel key
    onion @2;       # a fixed-size onion cell for the next relay
    receipt @3;     # reveals a receipt secret; payload holds k
    bundle @4;      # a user's SignedBundle
    descriptor @5;  # a node's SignedDescriptor
    decoy @6;       # cover traffic, dropped by the receiver
  }
}

# NodeDescriptor is what a node says about itself; it travels inside a
# SignedDescriptor so that anyone can check it against the fingerprint of
# identityKey.
struct NodeDescriptor {
  identityKey @0 :Data;       # Ed25519 public key, 32 bytes; its fingerprint names the node
  onionKey @1 :Data;          # X25519 public key for onion layers, 32 bytes; may rotate
  addresses @2 :List(Text);   # "host:port" hints where the node listens
  domain @3 :Text;            # mesh domain
  sequence @4 :UInt64;        # a higher sequence replaces a lower one from the same node
  lifetimeSeconds @5 :UInt32; # remaining lifetime; ages like an envelope TTL, never a wall-clock expiry
  onionEpoch @6 :UInt32;      # the epoch of onionKey, which onion packets for it name
  onionVersion @7 :UInt8;     # the onion packet version the node relays (mesh/onion); 0: none (older nodes)
}

# SignedDescriptor carries a NodeDescriptor as the exact bytes that were
# signed, so verification never depends on re-encoding.
struct SignedDescriptor {
  descriptor @0 :Data; # a single-segment Cap'n Proto message whose root is a NodeDescriptor
  signature @1 :Data;  # Ed25519 over "qpq node descriptor v1\x00" || descriptor, by identityKey
  # island is set, outside the signature, by the bridge that carried the
  # descriptor in from another mesh island (qpq-bridge): the island it came
  # from. Nodes never dial such a node's addresses (islands may reuse
  # private ranges) nor pick it for mailboxes or onion paths. Empty: this
  # island. Older nodes ignore it.
  island @2 :Text;
}

# UserKeyBundle is a user's published keys; it travels inside a
# SignedBundle, checked against the fingerprint of identityKey.
struct UserKeyBundle {
  identityKey @0 :Data;       # Ed25519 public key, 32 bytes; its fingerprint names the user
  kemKey @1 :Data;            # X-Wing (X25519 + ML-KEM-768) public key, 1216 bytes
  sequence @2 :UInt64;        # a higher sequence replaces a lower one from the same user
  lifetimeSeconds @3 :UInt32; # remaining lifetime (30 days when published), ages like a TTL
  readsInner @4 :UInt8;       # newest end-to-end inner layout the owner's client opens; 0 (older clients): 1
}

# SignedBundle carries a UserKeyBundle as the exact bytes that were signed.
struct SignedBundle {
  bundle @0 :Data;    # a single-segment Cap'n Proto message whose root is a UserKeyBundle
  signature @1 :Data; # Ed25519 over "qpq user bundle v1\x00" || bundle, by identityKey
}

# MeshPeer is the bootstrap capability one node offers another on a link
# (ALPN "quicproquo/p2p/1"). Each side of a link calls hello on the other's
# MeshPeer first; the link is up once it answers.
interface MeshPeer {
  # hello exchanges protocol versions; an incompatible peer gets an error.
  hello @0 (hello :Hello) -> (hello :Hello);
  # health is the liveness and RTT probe.
  health @1 () -> (health :Health);

  # push hands the peer envelopes it may lack: new ones at once on arrival,
  # and the answer to a summary. Each arrives with its remaining TTL and
  # the hop limit already decremented for this hop. The receiver checks
  # every envelope and stores what is new; accepted counts those.
  # A peer that pushes too fast gets an error and retries later, from a
  # callee at protocol version 1. From version 2 the callee answers
  # instead: taken is how many of the envelopes, from the first, it
  # handled (stored, or refused for good); the caller keeps the rest and
  # sends them again, no sooner than retryAfterMs from now. Both are 0 from
  # an older callee, which handled all of them.
  push @2 (envelopes :List(Envelope)) -> (accepted :UInt32, taken :UInt32, retryAfterMs :UInt32);

  # summary offers a bloom filter of the ids the caller holds; the callee
  # pushes back (with push) what the filter shows the caller lacks. key is
  # fresh per exchange and is prepended to each id before it is added, so a
  # false positive in one round is not repeated in the next.
  summary @3 (summary :Summary) -> ();

  # raise tells the peer that the caller now holds broadcasts it already
  # had with more hops left than before (a copy that came along a shorter
  # path arrived after a longer one). It is a notice, never a resend: each
  # entry names a broadcast the callee was pushed or pushed itself, and the
  # hop limit the callee may now hold it with (the caller's raised limit,
  # decremented for this hop). The callee caps it to its maximum, ignores
  # ids it does not hold, and when its own limit rises offers the broadcast
  # onward in the same way. At most 1024 entries; ids are 32 bytes. An old
  # peer answers unimplemented; the caller then sends it no more raises on
  # that link.
  raise @4 (raises :List(HopRaise)) -> ();

  # Mailbox placement (node/daemon/placement.go), served by nodes that
  # have it on; any other answers unimplemented and the caller takes it
  # as a placement that failed (the DM is flooded instead).
  #
  # place hands the callee DMs whose recipients' mailbox buckets it is
  # one of the placement nodes for. It stores them as a push would, but
  # holds them for pulls instead of offering them to its neighbours.
  # accepted counts those newly stored. At most 256 envelopes.
  place @5 (envelopes :List(Envelope)) -> (accepted :UInt32);

  # pull asks for the DMs placed on the callee whose recipient's mailbox
  # bucket is bucket (the first `bits` bits of the bucket hash, which the
  # callee must place with too), in id order after `after` (a 32-byte id,
  # or empty for the first), at most `limit` of them and about 96 KiB of
  # payload. next is the last id returned when more may follow, else
  # empty. A pull names a bucket that many users share, never a user.
  pull @6 (bucket :UInt32, bits :UInt8, after :Data, limit :UInt32) -> (envelopes :List(Envelope), next :Data);

  # onion hands the callee an onion packet (mesh/onion, one fixed size)
  # whose next relay it is. The callee peels its layer and forwards the
  # rest, or, as the exit, injects the envelope inside into store and
  # forward. The answer says only that the packet arrived, never what the
  # callee did with it. Protocol version 4.
  onion @7 (packet :Data) -> ();
}

# Summary is the anti-entropy digest of the ids a node holds.
struct Summary {
  filter @0 :Data; # a bits-and-blooms/bloom/v3 filter in its MarshalBinary form
  key @1 :Data;    # 16 random bytes, prepended to each 32-byte id before hashing
  count @2 :UInt32; # how many ids went in
  # Protocol version 2: a summary may cover only the ids in [start, end)
  # (byte-wise order), each 32 bytes or empty: an empty start is the
  # first id, an empty end past the last. Both empty (what a version-1
  # node sends, and what a version-1 node reads every summary as) is the
  # whole store. A round of partial summaries covers the whole id space;
  # each stays well under the RPC message bound however large the store.
  start @3 :Data;
  end @4 :Data;
  # Version 2: the XOR of the 32-byte ids in the range, or empty. A
  # receiver whose own ids in the range give the same digest and count
  # skips reading them.
  digest @5 :Data;
}

# HopRaise is one entry of MeshPeer.raise.
struct HopRaise {
  id @0 :Data;        # the broadcast's envelope id, 32 bytes
  hopLimit @1 :UInt8; # the hop limit the callee may now hold it with
}

# Node is the bootstrap capability a node offers a client (ALPN "capnp").
interface Node {
  # hello exchanges protocol versions; an incompatible client gets an error.
  hello @0 (hello :Hello) -> (hello :Hello);
  # health reports that the node is alive.
  health @1 () -> (health :Health);

  # enqueue hands the node an envelope for store and forward. It needs no
  # authentication (anonymous enqueue), so the entry node cannot tie the
  # sender to the recipient. stored is false when the node already had it.
  enqueue @2 (envelope :Envelope) -> (stored :Bool);

  # challenge returns a fresh random nonce for authenticate.
  challenge @3 () -> (nonce :Data);

  # authenticate proves the client holds a user key and returns that
  # user's mailbox. signature is Ed25519 by the bundle's identity key over
  #   "qpq client auth v1\x00" || purpose || 0x00 || node fingerprint (32)
  #   || TLS exporter ("qpq client auth", 32 bytes) || nonce
  # with purpose "mailbox", so a signature made for one node and TLS
  # session is worthless at any other. bundle is the user's SignedBundle;
  # the node publishes it (key directory).
  authenticate @4 (bundle :Data, nonce :Data, signature :Data) -> (mailbox :Mailbox);

  # publishBundle stores and spreads a user's SignedBundle (self-signed, so
  # anyone may publish it).
  publishBundle @5 (bundle :Data) -> ();

  # lookupBundle returns the newest SignedBundle the node knows for a user
  # fingerprint (32 bytes), or empty Data when it knows none. The caller
  # checks it against the fingerprint it asked for.
  lookupBundle @6 (fingerprint :Data) -> (bundle :Data);

  # channelFetch returns broadcast envelopes held for the given channel ids
  # (32 bytes each, at most 64), oldest first: for each channel those held
  # after the envelope id at the same index of `after`, or, when that entry
  # is empty or no longer held, the newest `limit`. When there are none and
  # waitSeconds > 0 it waits up to that long for one. Channel messages are
  # not acknowledged: they stay until their TTL ends, for late joiners.
  channelFetch @7 (channels :List(Data), limit :UInt32, waitSeconds :UInt32, after :List(Data)) -> (envelopes :List(Envelope));

  # receipts streams the receipt secrets (32 bytes each) this node has
  # seen, any user's, oldest first, so that a client can watch for its own
  # receipt tags and match them locally: asking a node about one exact tag
  # would tie the asker to the recipient, since every node that held the dm
  # saw that tag beside its destination. It needs no authentication: every
  # receipt reaches every node anyway, and a stream of all of them says
  # nothing about the asker.
  # `after` is a cursor: 0 means "from the oldest still held"; pass the
  # returned `next` (also when no secrets came) on the following call to
  # get only later receipts. A cursor this node did not give out (another
  # node's, or one from before its store was wiped) is accepted and means
  # "from the oldest still held", as does one older than what it still
  # holds; a cursor from before a restart of the same node may resume
  # where it was or start again from the oldest. So a client may see a
  # secret twice and must treat that as harmless. The cursor of all ones
  # (0xffffffffffffffff) means "from now on": no secrets, and a `next`
  # after the newest receipt held (a sender that wants only receipts of
  # what it sends from now takes it before sending). The node caps limit (0
  # means its maximum) and the bytes of one answer. When there are none
  # after the cursor and waitSeconds > 0 it waits up to that long (capped
  # by the node) for one.
  receipts @8 (after :UInt64, limit :UInt32, waitSeconds :UInt32) -> (secrets :List(Data), next :UInt64);

  # sendOnion hands the node an onion packet (mesh/onion) for its first
  # relay, the node fingerprint `first` (32 bytes), which the client chose
  # with the rest of the route. Like enqueue it needs no authentication;
  # the node forwards the packet as a relay forwards one and learns
  # neither the route past `first` nor what the packet carries. An error
  # means it could not take the packet (over a bound). With a replyId (16
  # bytes; the packet carries a reply block whose return route ends at
  # this node), the call waits up to waitMs (at most 60,000) for the
  # exit's reply to come back for that id: acked is true when it came,
  # which means the exit injected the message.
  sendOnion @9 (first :Data, packet :Data, replyId :Data, waitMs :UInt32) -> (acked :Bool);

  # descriptors returns up to `limit` (at most 64) signed node
  # descriptors (SignedDescriptor) of nodes that relay onion packets, a
  # random sample of those this node holds, so that a client can choose
  # onion routes itself; it checks each signature and keeps a cache from
  # several nodes, so one node cannot steer every route.
  descriptors @10 (limit :UInt32) -> (descriptors :List(Data));
}

# Mailbox is one authenticated user's view of the envelopes addressed to
# them at this node.
interface Mailbox {
  # fetch returns up to limit envelopes (oldest first) addressed to the
  # user. When there are none and waitSeconds > 0 it waits up to that long
  # for one to arrive.
  fetch @0 (limit :UInt32, waitSeconds :UInt32) -> (envelopes :List(Envelope));

  # ack acknowledges messages by revealing their receipt secrets (32 bytes
  # each). The node deletes every envelope whose receiptTag matches and
  # spreads a receipt so every other node deletes its copy too.
  ack @1 (secrets :List(Data)) -> (deleted :UInt32);
}
