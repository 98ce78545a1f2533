package e2e

import (
	"testing"
	"time"
)

const benchBody = 256

func BenchmarkSealDM(b *testing.B) {
	alice, bob := testUsers()
	to := bob.Bundle()
	body := make([]byte, benchBody)
	var n int
	for b.Loop() {
		s, err := SealDM(alice, to, body, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		n = len(s.Payload)
	}
	b.ReportMetric(float64(n-benchBody), "overhead-bytes")
}

func BenchmarkOpenDM(b *testing.B) {
	alice, bob := testUsers()
	body := make([]byte, benchBody)
	s, err := SealDM(alice, bob.Bundle(), body, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := OpenDM(bob, s.Payload); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(s.Payload)-benchBody), "overhead-bytes")
}

func BenchmarkSealChannel(b *testing.B) {
	alice, _ := testUsers()
	key := NewChannelKey()
	body := make([]byte, benchBody)
	var n int
	for b.Loop() {
		p, err := SealChannel(alice, key, body, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		n = len(p)
	}
	b.ReportMetric(float64(n-benchBody), "overhead-bytes")
}

func BenchmarkOpenChannel(b *testing.B) {
	alice, _ := testUsers()
	key := NewChannelKey()
	p, _ := SealChannel(alice, key, make([]byte, benchBody), time.Now())
	for b.Loop() {
		if _, err := OpenChannel(key, p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(p)-benchBody), "overhead-bytes")
}

func BenchmarkVerifyBundle(b *testing.B) {
	alice, _ := testUsers()
	bb, _ := alice.SignedBundle(1, time.Hour)
	for b.Loop() {
		if _, err := VerifyBundle(bb); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkArgon2Default measures loading a key file with the real
// parameters (32 MiB, 3 passes, 1 thread).
func BenchmarkArgon2Default(b *testing.B) {
	alice, _ := testUsers()
	data, _ := encodeKeyFile(alice, []byte("pw"), defaultKDF())
	for b.Loop() {
		if _, err := decodeKeyFile(data, []byte("pw"), fileLimits()); err != nil {
			b.Fatal(err)
		}
	}
}
