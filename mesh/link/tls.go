// Package link makes authenticated QUIC links between nodes and between a
// client and its node: one UDP socket per node, TLS 1.3 certificates made
// from Ed25519 identities and pinned by fingerprint, and Cap'n Proto RPC on
// the connection's first bidirectional stream.
package link

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// ALPN protocol names.
const (
	ALPNPeer   = "quicproquo/p2p/1" // node to node, MeshPeer bootstrap
	ALPNClient = "capnp"            // client to node, Node bootstrap
	// ALPNDial is a short-lived node-to-node connection to a node that is
	// not a neighbour (pushes only): the same MeshPeer and hello as
	// ALPNPeer, but the receiver gives it no neighbour slot. An older
	// node does not offer it, so its handshake fails with
	// no_application_protocol and nothing is registered there.
	ALPNDial = "quicproquo/p2p/1+dial"
)

// Errors a handshake can end with.
var (
	// ErrFingerprintMismatch: the peer proved a key other than the pinned one.
	ErrFingerprintMismatch = errors.New("peer fingerprint does not match the pinned one")
	// ErrNoCertificate: the peer presented no certificate.
	ErrNoCertificate = errors.New("peer presented no certificate")
	// ErrNotEd25519: the peer's certificate key is not an Ed25519 identity key.
	ErrNotEd25519 = errors.New("peer certificate key is not Ed25519")
)

// certificate returns a self-signed TLS certificate for the identity key.
// Validity dates are wide open on purpose: routers boot with wrong clocks,
// and trust comes from the pinned fingerprint, never from dates or CAs.
func certificate(key ed25519.PrivateKey) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate serial: %w", err)
	}
	fp := identity.FingerprintOf(key.Public().(ed25519.PublicKey))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "qpq " + fp.String()},
		NotBefore:    time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// PeerFingerprint returns the fingerprint of the Ed25519 key in the peer's
// certificate. The TLS handshake has already proved that the peer holds the
// private key; this names it.
func PeerFingerprint(cs tls.ConnectionState) (identity.Fingerprint, error) {
	if len(cs.PeerCertificates) == 0 {
		return identity.Fingerprint{}, ErrNoCertificate
	}
	pub, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if !ok {
		return identity.Fingerprint{}, ErrNotEd25519
	}
	return identity.FingerprintOf(pub), nil
}

// serverTLS answers every ALPN on one socket. Nodes must present a
// certificate; clients may (anonymous enqueue needs none). Session tickets
// are off, so every connection runs the full handshake and
// VerifyConnection sees a fresh certificate.
func serverTLS(cert tls.Certificate) *tls.Config {
	base := func(proto string, auth tls.ClientAuthType) *tls.Config {
		return &tls.Config{
			MinVersion:             tls.VersionTLS13,
			Certificates:           []tls.Certificate{cert},
			NextProtos:             []string{proto},
			ClientAuth:             auth,
			SessionTicketsDisabled: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 && auth != tls.RequireAnyClientCert {
					return nil
				}
				_, err := PeerFingerprint(cs)
				return err
			},
		}
	}
	peer := base(ALPNPeer, tls.RequireAnyClientCert)
	client := base(ALPNClient, tls.RequestClientCert)
	dial := base(ALPNDial, tls.RequireAnyClientCert)
	// An unknown ALPN gets a config that cannot agree on one, so the
	// handshake fails with no_application_protocol.
	refuse := base(ALPNPeer, tls.RequireAnyClientCert)
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		SessionTicketsDisabled: true,
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			switch {
			case slices.Contains(chi.SupportedProtos, ALPNPeer):
				return peer, nil
			case slices.Contains(chi.SupportedProtos, ALPNClient):
				return client, nil
			case slices.Contains(chi.SupportedProtos, ALPNDial):
				return dial, nil
			}
			return refuse, nil
		},
	}
}

// clientTLS dials with the given ALPN and refuses any server whose key does
// not have the expected fingerprint. VerifyConnection runs on resumed
// sessions too; there is no session cache anyway. A zero expect accepts
// any Ed25519 key (trust on first use: the caller records what it got).
func clientTLS(cert *tls.Certificate, alpn string, expect identity.Fingerprint) *tls.Config {
	conf := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{alpn},
		ServerName:         "qpq",
		InsecureSkipVerify: true, // trust is the pinned fingerprint, checked below
		VerifyConnection: func(cs tls.ConnectionState) error {
			got, err := PeerFingerprint(cs)
			if err != nil {
				return err
			}
			if !expect.IsZero() && !got.Equal(expect) {
				return fmt.Errorf("%w: expected %s, got %s", ErrFingerprintMismatch, expect, got)
			}
			return nil
		},
	}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	return conf
}
