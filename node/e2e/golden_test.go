package e2e

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Golden files: key files, a bundle, sealed DMs and a channel message made
// by an earlier build (the first set by the circl-based build of issue 10)
// and committed under testdata/golden. TestGolden opens them with today's
// code, so a change of library or layout that would lock users out of
// their keys or messages fails here. Regenerate only when adding a new
// format, never to make the test pass:
//
//	go test -run TestGolden ./node/e2e -args -update-golden
var updateGolden = flag.Bool("update-golden", false, "rewrite node/e2e/testdata/golden with the current code")

const goldenDir = "testdata/golden"

// goldenPassphrase protects recipient-passphrase.key.
const goldenPassphrase = "golden passphrase: correct horse battery staple"

// goldenDMSizes are the body lengths of the sealed DMs: empty, one byte,
// the longest in the smallest payload (1280 bytes) and the shortest in the
// next, a few blocks, and the maximum.
var goldenDMSizes = []int{0, 1, 3, 4, 200, 1000, 4096, maxBody}

// goldenManifest says what each golden file must open to.
type goldenManifest struct {
	Recipient   string      `json:"recipient"`   // fingerprint of recipient*.key and recipient.bundle
	Sender      string      `json:"sender"`      // fingerprint of sender.key, the author of every message
	KEMKey      string      `json:"kemKey"`      // hex of the recipient's X-Wing public key
	BundleSeq   uint64      `json:"bundleSeq"`   // recipient.bundle's sequence
	BundleLife  int64       `json:"bundleLife"`  // recipient.bundle's lifetime, seconds
	SentAtMilli int64       `json:"sentAtMilli"` // send time of every message
	DMs         []goldenDM  `json:"dms"`
	Channel     goldenChann `json:"channel"`
}

type goldenDM struct {
	File       string `json:"file"`
	BodyLen    int    `json:"bodyLen"` // body is goldenBody(BodyLen)
	ReceiptTag string `json:"receiptTag"`
}

type goldenChann struct {
	File    string `json:"file"`
	Key     string `json:"key"`     // hex ChannelKey
	BodyLen int    `json:"bodyLen"` // body is goldenBody(BodyLen)
}

// goldenBody is the body of a golden message of n bytes. Never change it:
// the committed files hold bodies made by it.
func goldenBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*131 + 7)
	}
	return b
}

func TestGolden(t *testing.T) {
	if *updateGolden {
		writeGolden(t)
	}
	raw, err := os.ReadFile(filepath.Join(goldenDir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m goldenManifest
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}

	recipient := loadGoldenUser(t, "recipient.key", nil)
	if got := recipient.Fingerprint().String(); got != m.Recipient {
		t.Fatalf("recipient.key fingerprint %s, want %s", got, m.Recipient)
	}
	if got := hex.EncodeToString(recipient.KEMPublicKey()); got != m.KEMKey {
		t.Fatalf("recipient.key derives KEM key %.32s..., want %.32s...", got, m.KEMKey)
	}
	enc := loadGoldenUser(t, "recipient-passphrase.key", []byte(goldenPassphrase))
	if !samePublic(recipient, enc) || !bytes.Equal(recipient.sign, enc.sign) || recipient.kemSeed != enc.kemSeed {
		t.Fatal("recipient-passphrase.key holds other keys than recipient.key")
	}
	sender := loadGoldenUser(t, "sender.key", nil)
	if got := sender.Fingerprint().String(); got != m.Sender {
		t.Fatalf("sender.key fingerprint %s, want %s", got, m.Sender)
	}

	b, err := VerifyBundle(readGolden(t, "recipient.bundle"))
	if err != nil {
		t.Fatalf("recipient.bundle: %v", err)
	}
	if b.Fingerprint.String() != m.Recipient || hex.EncodeToString(b.KEMKey) != m.KEMKey ||
		b.Sequence != m.BundleSeq || b.Lifetime != time.Duration(m.BundleLife)*time.Second {
		t.Fatalf("recipient.bundle verifies to %s seq %d life %v, want %s seq %d life %ds",
			b.Fingerprint, b.Sequence, b.Lifetime, m.Recipient, m.BundleSeq, m.BundleLife)
	}

	sentAt := time.UnixMilli(m.SentAtMilli)
	if len(m.DMs) != len(goldenDMSizes) {
		t.Fatalf("manifest lists %d DMs, want %d", len(m.DMs), len(goldenDMSizes))
	}
	for _, d := range m.DMs {
		for _, u := range []*User{recipient, enc} {
			o, err := OpenDM(u, readGolden(t, d.File))
			if err != nil {
				t.Fatalf("%s: %v", d.File, err)
			}
			if o.From.String() != m.Sender || !bytes.Equal(o.Body, goldenBody(d.BodyLen)) || !o.SentAt.Equal(sentAt) ||
				hex.EncodeToString(o.ReceiptTag[:]) != d.ReceiptTag {
				t.Fatalf("%s opened to from %s, %d bytes, sent %v, tag %x", d.File, o.From, len(o.Body), o.SentAt, o.ReceiptTag)
			}
		}
		// Sealed to the recipient, not to the sender.
		if _, err := OpenDM(sender, readGolden(t, d.File)); err == nil {
			t.Fatalf("%s opens for the sender", d.File)
		}
	}

	var key ChannelKey
	if k, err := hex.DecodeString(m.Channel.Key); err != nil || len(k) != len(key) {
		t.Fatalf("manifest channel key %q", m.Channel.Key)
	} else {
		copy(key[:], k)
	}
	o, err := OpenChannel(key, readGolden(t, m.Channel.File))
	if err != nil {
		t.Fatalf("%s: %v", m.Channel.File, err)
	}
	if o.From.String() != m.Sender || !bytes.Equal(o.Body, goldenBody(m.Channel.BodyLen)) || !o.SentAt.Equal(sentAt) {
		t.Fatalf("%s opened to from %s, %d bytes, sent %v", m.Channel.File, o.From, len(o.Body), o.SentAt)
	}
}

func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(goldenDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// loadGoldenUser loads a golden key file through LoadUser. Git does not
// keep the 0600 mode LoadUser insists on, so it loads a private copy.
func loadGoldenUser(t *testing.T, name string, passphrase []byte) *User {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, readGolden(t, name), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := LoadUser(path, passphrase)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return u
}

// writeGolden makes a fresh set of golden files with random keys.
func writeGolden(t *testing.T) {
	t.Helper()
	if err := os.MkdirAll(goldenDir, 0o755); err != nil {
		t.Fatal(err)
	}
	recipient, sender := NewUser(), NewUser()
	write := func(name string, b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(goldenDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	saveKey := func(name string, u *User, passphrase []byte) {
		t.Helper()
		b, err := encodeKeyFile(u, passphrase, defaultKDF()) // the parameters real files have
		if err != nil {
			t.Fatal(err)
		}
		write(name, b)
	}
	saveKey("recipient.key", recipient, nil)
	saveKey("recipient-passphrase.key", recipient, []byte(goldenPassphrase))
	saveKey("sender.key", sender, nil)

	const seq, life = 7, 30 * 24 * 3600
	bundle, err := recipient.SignedBundle(seq, life*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	write("recipient.bundle", bundle)

	sentAt := time.UnixMilli(1796176800123) // 2026-12-02, any fixed time
	m := goldenManifest{
		Recipient:   recipient.Fingerprint().String(),
		Sender:      sender.Fingerprint().String(),
		KEMKey:      hex.EncodeToString(recipient.KEMPublicKey()),
		BundleSeq:   seq,
		BundleLife:  life,
		SentAtMilli: sentAt.UnixMilli(),
	}
	for _, n := range goldenDMSizes {
		s, err := SealDM(sender, recipient.Bundle(), goldenBody(n), sentAt)
		if err != nil {
			t.Fatal(err)
		}
		d := goldenDM{File: "dm-" + strconv.Itoa(n) + ".bin", BodyLen: n, ReceiptTag: hex.EncodeToString(s.ReceiptTag[:])}
		write(d.File, s.Payload)
		m.DMs = append(m.DMs, d)
	}
	key := NewChannelKey()
	const chLen = 300
	p, err := SealChannel(sender, key, goldenBody(chLen), sentAt)
	if err != nil {
		t.Fatal(err)
	}
	m.Channel = goldenChann{File: "channel.bin", Key: hex.EncodeToString(key[:]), BodyLen: chLen}
	write(m.Channel.File, p)

	js, err := json.MarshalIndent(m, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	write("manifest.json", append(js, '\n'))
	t.Logf("wrote golden files for recipient %s", recipient.Fingerprint())
}
