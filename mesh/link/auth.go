package link

import (
	"crypto/tls"
	"fmt"

	"github.com/quicproquo/qpq/mesh/identity"
)

// Client authentication binds a user's signature to one node and one TLS
// session, so a node cannot relay a challenge to another node and log in
// there as the user.
const (
	authLabel     = "qpq client auth v1\x00"
	exporterLabel = "qpq client auth"
	// PurposeMailbox is the purpose of a signature that opens a mailbox.
	PurposeMailbox = "mailbox"
	// AuthSigLabel is the purpose label the user's key signs AuthMessage
	// under (e2e.User.SignPurpose).
	AuthSigLabel = "qpq client auth"
	// NonceLen is the length of a node's challenge.
	NonceLen = 32
)

// Exporter returns the 32-byte TLS exporter value of a session; both ends
// of one session compute the same value, no other session can.
func Exporter(cs tls.ConnectionState) ([]byte, error) {
	b, err := cs.ExportKeyingMaterial(exporterLabel, nil, 32)
	if err != nil {
		return nil, fmt.Errorf("TLS exporter: %w", err)
	}
	return b, nil
}

// AuthMessage is what a client signs to authenticate to a node.
func AuthMessage(purpose string, node identity.Fingerprint, exporter, nonce []byte) []byte {
	m := make([]byte, 0, len(authLabel)+len(purpose)+1+32+len(exporter)+len(nonce))
	m = append(m, authLabel...)
	m = append(m, purpose...)
	m = append(m, 0)
	m = append(m, node[:]...)
	m = append(m, exporter...)
	m = append(m, nonce...)
	return m
}
