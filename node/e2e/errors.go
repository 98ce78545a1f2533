package e2e

import "errors"

// Sentinel errors. Every error this package returns wraps one of them (or a
// filesystem error), with details in the message; compare with errors.Is.
var (
	// ErrPassphraseNeeded is returned by LoadUser when the key file is
	// encrypted and no passphrase was given.
	ErrPassphraseNeeded = errors.New("key file is encrypted: a passphrase is needed")

	// ErrWrongPassphrase is returned by LoadUser when the passphrase does
	// not decrypt the key file (whose checksum is intact, so the file is
	// not damaged). The file is left as it was.
	ErrWrongPassphrase = errors.New("wrong passphrase")

	// ErrCorruptKeyFile is returned by LoadUser, IsEncrypted and
	// ReadFingerprint for a file that is not a qpq user key file, is
	// truncated or damaged, or uses a format version this build does not
	// know.
	ErrCorruptKeyFile = errors.New("corrupt user key file")

	// ErrBadBundle is returned by VerifyBundle for bytes that are not a
	// well-formed signed key bundle (structure, sizes, key encodings), and
	// by SealDM for a Bundle whose keys have the wrong size.
	ErrBadBundle = errors.New("bad key bundle")

	// ErrBadSignature is returned when a signature does not verify: a
	// bundle not signed by its identity key, or a DM or channel message
	// whose sender signature is wrong (a forged sender).
	ErrBadSignature = errors.New("bad signature")

	// ErrBodyTooLarge is returned by SealDM and SealChannel for a body over
	// 16 KiB (gossip.MaxBody); the message names both sizes.
	ErrBodyTooLarge = errors.New("message body too large")

	// ErrMalformed is returned by OpenDM and OpenChannel for a payload whose
	// length is impossible, or whose decrypted content is not a message of
	// a known format version.
	ErrMalformed = errors.New("malformed sealed message")

	// ErrBadPadding is returned by OpenDM and OpenChannel when the padding
	// after the message is not all zero bytes.
	ErrBadPadding = errors.New("bad padding in sealed message")

	// ErrCannotOpen is returned by OpenDM when the payload does not decrypt
	// for this user (sealed to someone else, or tampered with), and by
	// OpenChannel when it does not decrypt under the channel key.
	ErrCannotOpen = errors.New("cannot decrypt: not for this key, or tampered with")

	// ErrBadShare is returned by ParseShare (and FormatShare for a bad
	// name) for a string that is not a valid channel share.
	ErrBadShare = errors.New("bad channel share string")

	// ErrBadLabel is returned by SignPurpose for an empty label, one that
	// holds a NUL byte, or one this package reserves.
	ErrBadLabel = errors.New("bad signature purpose label")
)
