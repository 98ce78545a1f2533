package schemas

import (
	"encoding/binary"
	"errors"
	"fmt"

	"capnproto.org/go/capnp/v3"
)

// MaxSegments bounds the segment count a decoded message may claim. Ours
// are single-segment; capnp.Unmarshal spends time proportional to a
// claimed count before it notices the bytes are not there.
const MaxSegments = 64

// ErrBadMessage is returned by Unmarshal for bytes that are not a
// reasonable Cap'n Proto message.
var ErrBadMessage = errors.New("bad Cap'n Proto message")

// Unmarshal decodes one unpacked message from bytes read from a file or
// the network, refusing absurd segment tables up front and limiting the
// traversal to a small multiple of the input size.
func Unmarshal(b []byte) (*capnp.Message, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("%w: %d bytes, shorter than a header", ErrBadMessage, len(b))
	}
	n := uint64(binary.LittleEndian.Uint32(b)) + 1
	if n > MaxSegments {
		return nil, fmt.Errorf("%w: claims %d segments, at most %d", ErrBadMessage, n, MaxSegments)
	}
	hdr := 4 + 4*n
	hdr += hdr % 8
	if hdr > uint64(len(b)) {
		return nil, fmt.Errorf("%w: segment table truncated", ErrBadMessage)
	}
	msg, err := capnp.Unmarshal(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	msg.ResetReadLimit(uint64(len(b))*8 + 4096)
	return msg, nil
}
