package e2e

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Channel share string, version 1. Add, never change: a new layout gets a
// new prefix ("qpqch2:"), and old prefixes keep being read.
//
//	qpqch1:<name>:<key>:<check>
//
// name is 1..64 printable UTF-8 characters without ':' and without
// leading or trailing spaces; key is the 32-byte ChannelKey in lowercase
// RFC 4648 base32 without padding (52 characters, the fingerprint
// alphabet); check is the first 5 bytes of SHA-256(shareSumLabel || name
// || 0x00 || key) in the same base32 (8 characters), catching typos and
// truncation. Upper-case prefix, key and check are accepted (QR readers);
// the name is case-sensitive. Surrounding whitespace is ignored.
const (
	sharePrefix    = "qpqch1:"
	MaxChannelName = 64 // characters (runes), not bytes
	shareKeyLen    = 52
	shareSumBytes  = 5
	shareSumLen    = 8
	maxShareLen    = 1024
)

var shareB32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// CheckChannelName returns an error wrapping ErrBadShare unless name is
// 1..64 printable UTF-8 characters, holds no ':' and neither starts nor
// ends with a space.
func CheckChannelName(name string) error {
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: channel name is not valid UTF-8", ErrBadShare)
	}
	n := utf8.RuneCountInString(name)
	if n < 1 || n > MaxChannelName {
		return fmt.Errorf("%w: channel name has %d characters, want 1..%d", ErrBadShare, n, MaxChannelName)
	}
	for _, r := range name {
		if r == ':' {
			return fmt.Errorf("%w: channel name holds ':'", ErrBadShare)
		}
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: channel name holds unprintable character %U", ErrBadShare, r)
		}
	}
	if name[0] == ' ' || name[len(name)-1] == ' ' {
		return fmt.Errorf("%w: channel name starts or ends with a space", ErrBadShare)
	}
	return nil
}

// FormatShare returns the share string for a channel: name must pass
// CheckChannelName, or FormatShare returns that error.
func FormatShare(name string, key ChannelKey) (string, error) {
	if err := CheckChannelName(name); err != nil {
		return "", err
	}
	sum := shareSum(name, key)
	return sharePrefix + name + ":" + shareB32.EncodeToString(key[:]) + ":" + shareB32.EncodeToString(sum[:]), nil
}

// ParseShare parses a share string made by FormatShare. Every error wraps
// ErrBadShare and says what was wrong; it never panics.
func ParseShare(s string) (name string, key ChannelKey, err error) {
	s = strings.TrimSpace(s)
	if len(s) > maxShareLen {
		return "", ChannelKey{}, fmt.Errorf("%w: %d bytes, longer than any share", ErrBadShare, len(s))
	}
	if len(s) < len(sharePrefix) || !strings.EqualFold(s[:len(sharePrefix)], sharePrefix) {
		if len(s) >= 5 && strings.EqualFold(s[:5], "qpqch") {
			v, _, _ := strings.Cut(s[5:], ":")
			return "", ChannelKey{}, fmt.Errorf("%w: share version %q unknown to this build (it reads 1)", ErrBadShare, v)
		}
		return "", ChannelKey{}, fmt.Errorf("%w: does not start with %q", ErrBadShare, sharePrefix)
	}
	parts := strings.Split(s[len(sharePrefix):], ":")
	if len(parts) != 3 {
		return "", ChannelKey{}, fmt.Errorf("%w: want %sNAME:KEY:CHECK, got %d fields after the prefix", ErrBadShare, sharePrefix, len(parts))
	}
	name, keyText, sumText := parts[0], strings.ToLower(parts[1]), strings.ToLower(parts[2])
	if err := CheckChannelName(name); err != nil {
		return "", ChannelKey{}, err
	}
	if len(keyText) != shareKeyLen {
		return "", ChannelKey{}, fmt.Errorf("%w: key has %d characters, want %d", ErrBadShare, len(keyText), shareKeyLen)
	}
	if n, err := shareB32.Decode(key[:], []byte(keyText)); err != nil || n != len(key) || shareB32.EncodeToString(key[:]) != keyText {
		return "", ChannelKey{}, fmt.Errorf("%w: key is not base32 of 32 bytes", ErrBadShare)
	}
	var sum [shareSumBytes]byte
	if len(sumText) != shareSumLen {
		return "", ChannelKey{}, fmt.Errorf("%w: check has %d characters, want %d", ErrBadShare, len(sumText), shareSumLen)
	}
	if n, err := shareB32.Decode(sum[:], []byte(sumText)); err != nil || n != len(sum) {
		return "", ChannelKey{}, fmt.Errorf("%w: check is not base32", ErrBadShare)
	}
	if want := shareSum(name, key); sum != want {
		return "", ChannelKey{}, fmt.Errorf("%w: check does not match (mistyped or truncated)", ErrBadShare)
	}
	return name, key, nil
}

func shareSum(name string, key ChannelKey) [shareSumBytes]byte {
	h := sha256.New()
	h.Write([]byte(shareSumLabel))
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(key[:])
	var full [sha256.Size]byte
	h.Sum(full[:0])
	return [shareSumBytes]byte(full[:shareSumBytes])
}
