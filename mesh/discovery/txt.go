package discovery

import (
	"errors"
	"fmt"
	"strings"

	"github.com/quicproquo/qpq/mesh/identity"
)

// TXT record keys. Add only, never change: other nodes parse them.
const (
	txtVersKey   = "txtvers"
	txtIDKey     = "id"
	txtDomainKey = "domain"
	txtVersion   = "1"
)

// maxTXTLen bounds the encoded TXT record (each string plus its length
// byte); DESIGN keeps it well under 200 bytes.
const maxTXTLen = 200

// maxDomainLen bounds the mesh domain name carried in the TXT record.
const maxDomainLen = 63

// Errors returned by parseTXT and buildTXT.
var (
	// errTXTVersion is returned for a record without txtvers=1.
	errTXTVersion = errors.New("discovery: TXT record has no txtvers=1")
	// errTXTID is returned for a record whose id is missing or not a
	// fingerprint.
	errTXTID = errors.New("discovery: TXT record has no valid id")
	// errTXTDomain is returned for a missing or malformed domain.
	errTXTDomain = errors.New("discovery: TXT record has no valid domain")
	// errTXTTooLong is returned for a record longer than maxTXTLen.
	errTXTTooLong = errors.New("discovery: TXT record too long")
	// errTXTDuplicate is returned when a key appears twice.
	errTXTDuplicate = errors.New("discovery: TXT record repeats a key")
)

// validDomain reports whether d can be a mesh domain: 1 to maxDomainLen
// printable ASCII characters other than space, '=' and '"'.
func validDomain(d string) bool {
	if d == "" || len(d) > maxDomainLen {
		return false
	}
	for i := 0; i < len(d); i++ {
		c := d[i]
		if c <= ' ' || c >= 0x7f || c == '=' || c == '"' {
			return false
		}
	}
	return true
}

// buildTXT returns the TXT strings announcing fp in domain.
func buildTXT(fp identity.Fingerprint, domain string) ([]string, error) {
	if fp.IsZero() {
		return nil, fmt.Errorf("%w: zero fingerprint", errTXTID)
	}
	if !validDomain(domain) {
		return nil, fmt.Errorf("%w: %q", errTXTDomain, domain)
	}
	txt := []string{
		txtVersKey + "=" + txtVersion,
		txtIDKey + "=" + fp.String(),
		txtDomainKey + "=" + domain,
	}
	if n := txtLen(txt); n > maxTXTLen {
		return nil, fmt.Errorf("%w: %d bytes", errTXTTooLong, n)
	}
	return txt, nil
}

// txtLen is the wire length of txt: each string with its length byte.
func txtLen(txt []string) int {
	n := 0
	for _, s := range txt {
		n += 1 + len(s)
	}
	return n
}

// parseTXT reads the fingerprint and mesh domain from a TXT record. Keys
// are case-insensitive (RFC 6763 section 6.4); unknown keys are ignored so
// later versions can add some.
func parseTXT(txt []string) (identity.Fingerprint, string, error) {
	var fp identity.Fingerprint
	if n := txtLen(txt); n > maxTXTLen {
		return fp, "", fmt.Errorf("%w: %d bytes", errTXTTooLong, n)
	}
	var vers, id, domain string
	var haveVers, haveID, haveDomain bool
	for _, s := range txt {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			continue
		}
		var dst *string
		var seen *bool
		switch strings.ToLower(k) {
		case txtVersKey:
			dst, seen = &vers, &haveVers
		case txtIDKey:
			dst, seen = &id, &haveID
		case txtDomainKey:
			dst, seen = &domain, &haveDomain
		default:
			continue
		}
		if *seen {
			return fp, "", fmt.Errorf("%w: %q", errTXTDuplicate, k)
		}
		*dst, *seen = v, true
	}
	if vers != txtVersion {
		return fp, "", errTXTVersion
	}
	if !haveID {
		return fp, "", fmt.Errorf("%w: missing", errTXTID)
	}
	fp, err := identity.ParseFingerprint(id)
	if err != nil {
		return identity.Fingerprint{}, "", fmt.Errorf("%w: %w", errTXTID, err)
	}
	if fp.IsZero() {
		return identity.Fingerprint{}, "", fmt.Errorf("%w: zero fingerprint", errTXTID)
	}
	if !validDomain(domain) {
		return identity.Fingerprint{}, "", fmt.Errorf("%w: %q", errTXTDomain, domain)
	}
	return fp, domain, nil
}
