package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/quicproquo/qpq/mesh/identity"
)

// User key file, format version 1. Add, never change: new record types
// and new protection kinds may be added; nothing below changes meaning.
//
//	offset size
//	0      8    magic "qpquser\x00"
//	8      1    format version, 1
//	9      1    protection: 0 none, 1 Argon2id + XChaCha20-Poly1305
//	10     32   Ed25519 identity public key (public: lets a tool show the
//	            fingerprint without the passphrase; checked on load)
//	protection 0:
//	42     ...  records, in the clear
//	protection 1:
//	42     4    Argon2id passes, big endian
//	46     4    Argon2id memory in KiB, big endian
//	50     1    Argon2id threads
//	51     16   salt
//	67     24   XChaCha20-Poly1305 nonce
//	91     ...  sealed records and tag; key = Argon2id(passphrase, salt),
//	            additional data = bytes 0..90, so no header byte can change
//	both:
//	end-32 32   SHA-256(keyFileSumLabel || every byte before it), so a
//	            damaged or truncated file is reported as such, and
//	            ErrWrongPassphrase really means the passphrase is wrong
//
// Records: type (1 byte), length (2 bytes, big endian), value. Type 1 is
// the Ed25519 seed, type 2 the X-Wing seed, 32 bytes each, both required,
// each at most once. Unknown types are kept and written back unchanged,
// so an older build re-saving a newer file loses nothing.
const (
	keyFileMagic   = "qpquser\x00"
	keyFileVersion = 1

	protectNone     = 0
	protectArgon2id = 1

	keyFileHeaderLen = 8 + 1 + 1 + ed25519.PublicKeySize
	kdfHeaderLen     = 4 + 4 + 1 + saltLen + chacha20poly1305.NonceSizeX
	saltLen          = 16

	recEd25519Seed = 1
	recXWingSeed   = 2

	// maxKeyFile bounds what LoadUser reads; a real file is about 200 bytes.
	maxKeyFile = 4 << 10
)

// Argon2id parameters for new key files: affordable on a 64 MB router
// (about a tenth of a second on a desktop, a few seconds on a slow MIPS).
// Files record their own parameters, so these may change.
const (
	defaultPasses    = 3
	defaultMemoryKiB = 32 << 10
	defaultThreads   = 1
)

// Bounds on parameters read from a file, so a damaged or hostile file
// cannot make LoadUser allocate gigabytes or run for hours.
const (
	maxPasses    = 64
	maxMemoryKiB = 1 << 20
	maxThreads   = 64
)

// kdfParams are Argon2id's cost parameters.
type kdfParams struct {
	passes    uint32
	memoryKiB uint32
	threads   uint8
}

func defaultKDF() kdfParams {
	return kdfParams{passes: defaultPasses, memoryKiB: defaultMemoryKiB, threads: defaultThreads}
}

func fileLimits() kdfParams {
	return kdfParams{passes: maxPasses, memoryKiB: maxMemoryKiB, threads: maxThreads}
}

// SaveUser writes u to path atomically with mode 0600 (a crash leaves the
// old file or the new one, never a torn one), creating the directory
// (0700) when needed. With a non-empty passphrase the secret keys are
// encrypted (Argon2id, XChaCha20-Poly1305); with an empty one they are
// stored unencrypted and only the file mode protects them. An existing
// file is replaced.
func SaveUser(path string, u *User, passphrase []byte) error {
	return saveUser(path, u, passphrase, defaultKDF())
}

// saveUser is SaveUser with chosen Argon2id parameters (tests use cheap
// ones).
func saveUser(path string, u *User, passphrase []byte, p kdfParams) error {
	data, err := encodeKeyFile(u, passphrase, p)
	if err != nil {
		return fmt.Errorf("save user key %s: %w", path, err)
	}
	return writeFileAtomic(path, data)
}

// LoadUser reads a key file written by SaveUser. It refuses a file that
// group or others can read (identity.ErrKeyFileMode), returns
// ErrPassphraseNeeded for an encrypted file when passphrase is empty,
// ErrWrongPassphrase when it does not decrypt, and ErrCorruptKeyFile for
// anything that is not an intact key file. A passphrase given for an
// unencrypted file is ignored. LoadUser never writes.
func LoadUser(path string, passphrase []byte) (*User, error) {
	data, err := readKeyFile(path, true)
	if err != nil {
		return nil, err
	}
	u, err := decodeKeyFile(data, passphrase, fileLimits())
	if err != nil {
		return nil, fmt.Errorf("user key file %s: %w", path, err)
	}
	return u, nil
}

// IsEncrypted reports whether the key file at path is protected by a
// passphrase. It reads only the header and does not check the file mode.
func IsEncrypted(path string) (bool, error) {
	data, err := readKeyFile(path, false)
	if err != nil {
		return false, err
	}
	prot, _, err := parseHeader(data)
	if err != nil {
		return false, fmt.Errorf("user key file %s: %w", path, err)
	}
	return prot == protectArgon2id, nil
}

// ReadFingerprint returns the fingerprint of the user whose key file is at
// path without needing the passphrase (the public key is stored in the
// clear). It does not prove the file's secret keys match: LoadUser does.
func ReadFingerprint(path string) (identity.Fingerprint, error) {
	data, err := readKeyFile(path, false)
	if err != nil {
		return identity.Fingerprint{}, err
	}
	_, pub, err := parseHeader(data)
	if err != nil {
		return identity.Fingerprint{}, fmt.Errorf("user key file %s: %w", path, err)
	}
	return identity.FingerprintOf(pub), nil
}

// readKeyFile reads at most maxKeyFile bytes from a regular file, checking
// its mode first when checkMode is set.
func readKeyFile(path string, checkMode bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open user key file %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("user key file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("user key file %s: %w: not a regular file", path, ErrCorruptKeyFile)
	}
	if checkMode {
		if err := identity.CheckKeyFileMode(path); err != nil {
			return nil, err
		}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read user key file %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("user key file %s: %w: larger than %d bytes", path, ErrCorruptKeyFile, maxKeyFile)
	}
	return data, nil
}

// encodeKeyFile builds the file bytes for u.
func encodeKeyFile(u *User, passphrase []byte, p kdfParams) ([]byte, error) {
	recs := encodeRecords(u)
	defer clear(recs)

	out := make([]byte, 0, 256)
	out = append(out, keyFileMagic...)
	out = append(out, keyFileVersion)
	if len(passphrase) == 0 {
		out = append(out, protectNone)
		out = append(out, u.PublicKey()...)
		out = append(out, recs...)
		return appendSum(out), nil
	}
	if err := checkKDF(p, fileLimits()); err != nil {
		return nil, err
	}
	out = append(out, protectArgon2id)
	out = append(out, u.PublicKey()...)
	out = binary.BigEndian.AppendUint32(out, p.passes)
	out = binary.BigEndian.AppendUint32(out, p.memoryKiB)
	out = append(out, p.threads)
	var salt [saltLen]byte
	var nonce [chacha20poly1305.NonceSizeX]byte
	rand.Read(salt[:])
	rand.Read(nonce[:])
	out = append(out, salt[:]...)
	out = append(out, nonce[:]...)

	key := argon2.IDKey(passphrase, salt[:], p.passes, p.memoryKiB, p.threads, chacha20poly1305.KeySize)
	defer clear(key)
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	return appendSum(aead.Seal(out, nonce[:], recs, out)), nil
}

func encodeRecords(u *User) []byte {
	var recs []byte
	put := func(typ byte, v []byte) {
		recs = append(recs, typ)
		recs = binary.BigEndian.AppendUint16(recs, uint16(len(v)))
		recs = append(recs, v...)
	}
	put(recEd25519Seed, u.sign.Seed())
	put(recXWingSeed, u.kemSeed[:])
	return append(recs, u.extra...)
}

func appendSum(b []byte) []byte {
	sum := keyFileSum(b)
	return append(b, sum[:]...)
}

func keyFileSum(b []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(keyFileSumLabel))
	h.Write(b)
	var s [sha256.Size]byte
	h.Sum(s[:0])
	return s
}

// parseHeader checks magic, version and protection and returns the
// protection kind and the stored public key.
func parseHeader(data []byte) (byte, ed25519.PublicKey, error) {
	if len(data) < len(keyFileMagic) || string(data[:len(keyFileMagic)]) != keyFileMagic {
		return 0, nil, fmt.Errorf("%w: not a qpq user key file", ErrCorruptKeyFile)
	}
	if len(data) < keyFileHeaderLen {
		return 0, nil, fmt.Errorf("%w: truncated header (%d bytes)", ErrCorruptKeyFile, len(data))
	}
	if v := data[8]; v != keyFileVersion {
		return 0, nil, fmt.Errorf("%w: format version %d unknown to this build (it reads %d)", ErrCorruptKeyFile, v, keyFileVersion)
	}
	prot := data[9]
	if prot != protectNone && prot != protectArgon2id {
		return 0, nil, fmt.Errorf("%w: protection kind %d unknown to this build", ErrCorruptKeyFile, prot)
	}
	return prot, ed25519.PublicKey(data[10:keyFileHeaderLen]), nil
}

// decodeKeyFile parses file bytes, refusing Argon2id parameters above
// limit. It never panics, whatever data holds.
func decodeKeyFile(data, passphrase []byte, limit kdfParams) (*User, error) {
	prot, pub, err := parseHeader(data)
	if err != nil {
		return nil, err
	}
	if len(data) < keyFileHeaderLen+sha256.Size {
		return nil, fmt.Errorf("%w: truncated (%d bytes)", ErrCorruptKeyFile, len(data))
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if want := keyFileSum(body); subtle.ConstantTimeCompare(sum, want[:]) != 1 {
		return nil, fmt.Errorf("%w: checksum mismatch (damaged or truncated)", ErrCorruptKeyFile)
	}
	var recs []byte
	switch prot {
	case protectNone:
		recs = body[keyFileHeaderLen:]
	case protectArgon2id:
		if len(passphrase) == 0 {
			return nil, ErrPassphraseNeeded
		}
		hdrEnd := keyFileHeaderLen + kdfHeaderLen
		if len(body) < hdrEnd+chacha20poly1305.Overhead {
			return nil, fmt.Errorf("%w: encrypted part truncated (%d bytes)", ErrCorruptKeyFile, len(body))
		}
		h := body[keyFileHeaderLen:hdrEnd]
		p := kdfParams{
			passes:    binary.BigEndian.Uint32(h[0:4]),
			memoryKiB: binary.BigEndian.Uint32(h[4:8]),
			threads:   h[8],
		}
		if err := checkKDF(p, limit); err != nil {
			return nil, err
		}
		salt := h[9 : 9+saltLen]
		nonce := h[9+saltLen:]
		key := argon2.IDKey(passphrase, salt, p.passes, p.memoryKiB, p.threads, chacha20poly1305.KeySize)
		defer clear(key)
		aead, err := chacha20poly1305.NewX(key)
		if err != nil {
			return nil, err
		}
		recs, err = aead.Open(nil, nonce, body[hdrEnd:], body[:hdrEnd])
		if err != nil {
			return nil, ErrWrongPassphrase
		}
		defer clear(recs)
	}
	u, err := parseRecords(recs)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(u.PublicKey(), pub) != 1 {
		return nil, fmt.Errorf("%w: secret key does not match the stored public key", ErrCorruptKeyFile)
	}
	return u, nil
}

// checkKDF refuses parameters Argon2id cannot use or that exceed limit.
func checkKDF(p, limit kdfParams) error {
	switch {
	case p.passes < 1 || p.passes > limit.passes:
		return fmt.Errorf("%w: Argon2id passes %d outside 1..%d", ErrCorruptKeyFile, p.passes, limit.passes)
	case p.threads < 1 || p.threads > limit.threads:
		return fmt.Errorf("%w: Argon2id threads %d outside 1..%d", ErrCorruptKeyFile, p.threads, limit.threads)
	case p.memoryKiB < 8*uint32(p.threads) || p.memoryKiB > limit.memoryKiB:
		return fmt.Errorf("%w: Argon2id memory %d KiB outside %d..%d", ErrCorruptKeyFile, p.memoryKiB, 8*uint32(p.threads), limit.memoryKiB)
	}
	return nil
}

func parseRecords(recs []byte) (*User, error) {
	var edSeed, kemSeed, extra []byte
	for len(recs) > 0 {
		if len(recs) < 3 {
			return nil, fmt.Errorf("%w: truncated record", ErrCorruptKeyFile)
		}
		typ, n := recs[0], int(binary.BigEndian.Uint16(recs[1:3]))
		if len(recs) < 3+n {
			return nil, fmt.Errorf("%w: record type %d claims %d bytes, %d left", ErrCorruptKeyFile, typ, n, len(recs)-3)
		}
		v := recs[3 : 3+n]
		switch typ {
		case recEd25519Seed, recXWingSeed:
			dst := &edSeed
			if typ == recXWingSeed {
				dst = &kemSeed
			}
			if *dst != nil {
				return nil, fmt.Errorf("%w: record type %d repeated", ErrCorruptKeyFile, typ)
			}
			if n != seedSize {
				return nil, fmt.Errorf("%w: record type %d is %d bytes, want %d", ErrCorruptKeyFile, typ, n, seedSize)
			}
			*dst = v
		default:
			extra = append(extra, recs[:3+n]...)
		}
		recs = recs[3+n:]
	}
	if edSeed == nil || kemSeed == nil {
		return nil, fmt.Errorf("%w: missing identity or KEM key", ErrCorruptKeyFile)
	}
	u := userFromSeeds(edSeed, kemSeed)
	u.extra = extra
	return u, nil
}

// writeFileAtomic writes data to a temporary file beside path with mode
// 0600, syncs it, renames it over path and syncs the directory.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save user key %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("save user key %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("save user key %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		// Best effort: make the rename itself durable. The new file is
		// already in place, so a failure here is not reported.
		d.Sync()
		d.Close()
	}
	return nil
}
