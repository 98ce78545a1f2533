package e2e

import (
	"bytes"
)

// cheapKDF keeps Argon2id fast in tests; TestSaveUserDefaultParams runs
// the real parameters once.
var cheapKDF = kdfParams{passes: 1, memoryKiB: 64, threads: 1}

// testUsers returns two users with fixed keys, so fuzz corpora stay valid
// from run to run.
func testUsers() (alice, bob *User) {
	return userFromSeeds(bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)),
		userFromSeeds(bytes.Repeat([]byte{3}, 32), bytes.Repeat([]byte{4}, 32))
}

// samePublic reports whether two users have the same public keys.
func samePublic(a, b *User) bool {
	return bytes.Equal(a.PublicKey(), b.PublicKey()) && bytes.Equal(a.kemPub, b.kemPub) && a.Fingerprint() == b.Fingerprint()
}
