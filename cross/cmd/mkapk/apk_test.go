package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestCheckVersion: mkapk takes the versions apk takes, with a release, and refuses
// Debian's -N release; where the real apk is built, it agrees.
func TestCheckVersion(t *testing.T) {
	apk := ""
	if d := os.Getenv("QPQ_OWTOOLS"); d != "" {
		if !filepath.IsAbs(d) {
			d = filepath.Join("..", "..", "..", d)
		}
		if _, err := os.Stat(filepath.Join(d, "bin", "apk")); err == nil {
			apk = filepath.Join(d, "bin", "apk")
		}
	}
	for _, c := range []struct {
		v      string
		ok     bool
		apkToo bool // apk version --check's verdict
	}{
		{"0.1.0-r1", true, true},
		{"0.2.0-r12", true, true},
		{"0.1.0-1", false, false},
		{"0.1.0", false, true}, // apk takes it, but OpenWrt's packages always carry a release
		{"0.1.0_r1", false, false},
		{"", false, false},
	} {
		if err := checkVersion(c.v); (err == nil) != c.ok {
			t.Errorf("checkVersion(%q) = %v, want ok %v", c.v, err, c.ok)
		}
		if apk == "" || c.v == "" {
			continue
		}
		err := exec.Command(apk, "version", "--check", c.v).Run()
		if (err == nil) != c.apkToo {
			t.Errorf("apk version --check %s: %v, want ok %v", c.v, err, c.apkToo)
		}
	}
}
