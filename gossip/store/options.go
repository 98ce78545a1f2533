package store

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"
)

// Clock tells the time. The store measures how long it has held an
// envelope as differences between two Now readings, so a clock whose
// readings carry Go's monotonic reading (time.Now does) is immune to the
// wall clock being set; the wall reading is only used, across a restart,
// to count downtime when it looks plausible.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Defaults the zero Options get.
const (
	DefaultMaxBytes    = 64 << 20
	DefaultMaxTTL      = 7 * 24 * time.Hour
	DefaultMaxHops     = 32
	DefaultLockTimeout = time.Second
	minTombstones      = 1024
)

// Options configure a Store. Every zero field takes the default named in
// its comment.
type Options struct {
	// MaxBytes bounds the stored envelope records together (the encoded
	// envelope plus a small header each; the file is somewhat larger
	// because of indexes, tombstones and free pages). Zero means
	// DefaultMaxBytes (64 MiB).
	MaxBytes int64
	// MaxReceiptBytes, MaxBundleBytes and MaxDescriptorBytes are the
	// budgets of receipts, key bundles and node descriptors, carved out
	// of MaxBytes so that neither they nor messages can starve the
	// other. Zero means MaxBytes/4, MaxBytes/8 and MaxBytes/32. Messages
	// (dm, broadcast, onion) get what is left (19/32). Receipts get the
	// most for their size (60 bytes each) because every delivered DM
	// leaves one for MaxTTL.
	MaxReceiptBytes    int64
	MaxBundleBytes     int64
	MaxDescriptorBytes int64
	// MaxPerSource bounds the messages one source (a client or a link,
	// as named to Put) may hold. Zero means an eighth of the message
	// budget. Every budget is also shared fairly: once one is more than
	// half full, a source holding more than the budget divided by the
	// sources using it is refused (see Put).
	MaxPerSource int64
	// MaxPerMailbox bounds what one destination may hold. Zero means
	// MaxBytes/4.
	MaxPerMailbox int64
	// MaxPerMailboxSource bounds what one source may hold in one
	// mailbox, so no one sender fills someone's mailbox. Zero means
	// MaxPerMailbox/4.
	MaxPerMailboxSource int64
	// MaxTombstones bounds the remembered ids of delivered and expired
	// envelopes; past it the oldest are forgotten early. Zero means
	// MaxBytes/1024, at least 1024.
	MaxTombstones int64
	// MaxTTL caps the TTL of every envelope put, and is how long a
	// tombstone is remembered. Zero means DefaultMaxTTL (7 days).
	MaxTTL time.Duration
	// MaxHops caps the hop limit of every envelope put. Zero means
	// DefaultMaxHops (32).
	MaxHops uint8
	// LockTimeout is how long Open waits for another process's lock on
	// the file before failing with ErrLocked. Zero means 1 s.
	LockTimeout time.Duration
	// Clock tells the time; nil means the system clock.
	Clock Clock
	// Logger receives the few events worth logging (downtime counted or
	// not at Open); nil discards them.
	Logger *slog.Logger
}

// populate fills defaults and returns every problem found at once.
func (o Options) populate() (Options, error) {
	var errs []error
	for _, f := range []struct {
		name string
		v    int64
	}{{"MaxBytes", o.MaxBytes}, {"MaxReceiptBytes", o.MaxReceiptBytes}, {"MaxBundleBytes", o.MaxBundleBytes},
		{"MaxDescriptorBytes", o.MaxDescriptorBytes}, {"MaxPerSource", o.MaxPerSource}, {"MaxPerMailbox", o.MaxPerMailbox},
		{"MaxPerMailboxSource", o.MaxPerMailboxSource}, {"MaxTombstones", o.MaxTombstones}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%s is %d, must not be negative", f.name, f.v))
		}
	}
	switch {
	case o.MaxTTL < 0:
		errs = append(errs, fmt.Errorf("MaxTTL is %v, must not be negative", o.MaxTTL))
	case o.MaxTTL != 0 && o.MaxTTL < time.Second:
		errs = append(errs, fmt.Errorf("MaxTTL is %v, must be at least 1s", o.MaxTTL))
	case o.MaxTTL > math.MaxUint32*time.Second:
		errs = append(errs, fmt.Errorf("MaxTTL is %v, over the %v a TTL field holds", o.MaxTTL, math.MaxUint32*time.Second))
	}
	if o.LockTimeout < 0 {
		errs = append(errs, fmt.Errorf("LockTimeout is %v, must not be negative", o.LockTimeout))
	}
	if len(errs) > 0 {
		return o, fmt.Errorf("store options: %w", errors.Join(errs...))
	}
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxReceiptBytes == 0 {
		o.MaxReceiptBytes = max(o.MaxBytes/4, 1)
	}
	if o.MaxBundleBytes == 0 {
		o.MaxBundleBytes = max(o.MaxBytes/8, 1)
	}
	if o.MaxDescriptorBytes == 0 {
		o.MaxDescriptorBytes = max(o.MaxBytes/32, 1)
	}
	if o.messageBytes() <= 0 {
		return o, fmt.Errorf("store options: MaxReceiptBytes, MaxBundleBytes and MaxDescriptorBytes (%d, %d, %d) leave nothing of MaxBytes (%d) for messages",
			o.MaxReceiptBytes, o.MaxBundleBytes, o.MaxDescriptorBytes, o.MaxBytes)
	}
	if o.MaxPerSource == 0 {
		o.MaxPerSource = max(o.messageBytes()/8, 1)
	}
	if o.MaxPerMailbox == 0 {
		o.MaxPerMailbox = max(o.MaxBytes/4, 1)
	}
	if o.MaxPerMailboxSource == 0 {
		o.MaxPerMailboxSource = max(o.MaxPerMailbox/4, 1)
	}
	if o.MaxTombstones == 0 {
		o.MaxTombstones = max(o.MaxBytes/1024, minTombstones)
	}
	if o.MaxTTL == 0 {
		o.MaxTTL = DefaultMaxTTL
	}
	if o.MaxHops == 0 {
		o.MaxHops = DefaultMaxHops
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// messageBytes is the budget left for messages once the other kinds have
// theirs.
func (o Options) messageBytes() int64 {
	return o.MaxBytes - o.MaxReceiptBytes - o.MaxBundleBytes - o.MaxDescriptorBytes
}

// budget is what the envelopes of pool p may take together.
func (o Options) budget(p pool) int64 {
	switch p {
	case poolReceipt:
		return o.MaxReceiptBytes
	case poolBundle:
		return o.MaxBundleBytes
	case poolDescriptor:
		return o.MaxDescriptorBytes
	}
	return o.messageBytes()
}

// perSource is the most one source may hold of pool p, however empty the
// store: messages have MaxPerSource; the other kinds, which replace or
// delete each other and mostly come from the node itself, are bounded by
// their budget and the fair share only.
func (o Options) perSource(p pool) int64 {
	if p == poolMessage {
		return o.MaxPerSource
	}
	return o.budget(p)
}

// RecordOverhead is what the store charges for an envelope beyond its
// encoded size (the record header).
const RecordOverhead = recHeaderLen

// PerSourceShare is the most one source (a client address or a link)
// can hold in one mailbox of a store of maxBytes opened with the default
// Options: the smaller of MaxPerSource and MaxPerMailboxSource. An
// envelope larger than this is refused from every source, so a node
// whose store is this small cannot carry the largest sealed messages;
// the CLI warns about it. It is 0 when maxBytes is too small to open a
// store at all.
func PerSourceShare(maxBytes int64) int64 {
	o, err := Options{MaxBytes: maxBytes}.populate()
	if err != nil || maxBytes <= 0 {
		return 0
	}
	return min(o.MaxPerSource, o.MaxPerMailboxSource)
}
