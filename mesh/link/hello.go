package link

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/quicproquo/qpq/schemas"
)

// Protocol versions this build speaks. Raise ProtocolVersion when the wire
// gains something a peer must know about; raise MinProtocolVersion only
// when dropping support for old peers.
const (
	ProtocolVersion    uint16 = 6
	MinProtocolVersion uint16 = 1
	// CellVersion is the first version whose links carry onion packets
	// in cells (QUIC datagrams, mesh/cell) instead of RPC calls.
	CellVersion uint16 = 5
	// StreamVersion is the first version whose links, when both sides
	// send decoys, carry the message calls (push, raise, place) in a
	// reliable stream of cells (mesh/cell.Stream); hello then says each
	// side's decoy rate.
	StreamVersion uint16 = 6
)

// maxHelloText bounds the free-form strings in a hello.
const maxHelloText = 256

// maxHelloDecoyRate bounds the decoy rate a hello may claim (a node's
// own bound, node/config.MaxDecoyRate, is lower).
const maxHelloDecoyRate = 1000

// ErrIncompatible is returned when two sides share no protocol version.
var ErrIncompatible = errors.New("no common protocol version")

// Hello is the Go form of schemas.Hello.
type Hello struct {
	Version, MinVersion uint16
	Software, Domain    string
	// DecoyRate is the mean cover cells per second the side sends on
	// each link (0: decoys off; older sides never say).
	DecoyRate float64
}

// LocalHello is what this build says about itself.
func LocalHello(software, domain string) Hello {
	return Hello{Version: ProtocolVersion, MinVersion: MinProtocolVersion, Software: software, Domain: domain}
}

// Negotiate returns the protocol version two sides use, or ErrIncompatible
// naming both ranges.
func Negotiate(local, remote Hello) (uint16, error) {
	if remote.MinVersion > remote.Version {
		return 0, fmt.Errorf("%w: peer claims versions %d..%d", ErrIncompatible, remote.MinVersion, remote.Version)
	}
	if remote.Version < local.MinVersion || remote.MinVersion > local.Version {
		return 0, fmt.Errorf("%w: we speak %d..%d, peer speaks %d..%d",
			ErrIncompatible, local.MinVersion, local.Version, remote.MinVersion, remote.Version)
	}
	return min(local.Version, remote.Version), nil
}

// ReadHello converts and bounds a received hello.
func ReadHello(h schemas.Hello) (Hello, error) {
	out := Hello{Version: h.Version(), MinVersion: h.MinVersion(), DecoyRate: float64(h.DecoyRate())}
	if r := out.DecoyRate; r != r || r < 0 || r > maxHelloDecoyRate {
		return Hello{}, fmt.Errorf("hello.decoyRate: %v cells/s is not a rate in 0..%d", r, maxHelloDecoyRate)
	}
	var err error
	if out.Software, err = boundedText(h.Software, "software"); err != nil {
		return Hello{}, err
	}
	if out.Domain, err = boundedText(h.Domain, "domain"); err != nil {
		return Hello{}, err
	}
	return out, nil
}

func boundedText(get func() (string, error), field string) (string, error) {
	s, err := get()
	if err != nil {
		return "", fmt.Errorf("hello.%s: %w", field, err)
	}
	if len(s) > maxHelloText || !utf8.ValidString(s) {
		return "", fmt.Errorf("hello.%s: longer than %d bytes or not UTF-8", field, maxHelloText)
	}
	return s, nil
}

// WriteHello fills h from v.
func WriteHello(h schemas.Hello, v Hello) error {
	h.SetVersion(v.Version)
	h.SetMinVersion(v.MinVersion)
	h.SetDecoyRate(float32(v.DecoyRate))
	if err := h.SetSoftware(v.Software); err != nil {
		return err
	}
	return h.SetDomain(v.Domain)
}
