package cross

import (
	"os"
	"strings"
	"testing"

	"github.com/quicproquo/qpq/cross/ipk"
)

// The license is stated once for people (LICENSE), once for the feed
// (PKG_LICENSE, PKG_LICENSE_FILES) and once in every package's control
// file; the three must agree.
func TestLicenseAgreesEverywhere(t *testing.T) {
	text, err := os.ReadFile("../LICENSE")
	if err != nil {
		t.Fatalf("the repository has no LICENSE: %v", err)
	}
	if !strings.Contains(string(text), "Apache License") || !strings.Contains(string(text), "Version 2.0") || ipk.QPQLicense != "Apache-2.0" {
		t.Fatalf("LICENSE is not the Apache License 2.0 that ipk.QPQLicense (%q) names", ipk.QPQLicense)
	}
	mk, err := os.ReadFile(feedMake)
	if err != nil {
		t.Fatal(err)
	}
	if got := makeVar(string(mk), "PKG_LICENSE"); got != ipk.QPQLicense {
		t.Errorf("openwrt/Makefile PKG_LICENSE:=%q, want %q", got, ipk.QPQLicense)
	}
	if got := makeVar(string(mk), "PKG_LICENSE_FILES"); got != "LICENSE" {
		t.Errorf("openwrt/Makefile PKG_LICENSE_FILES:=%q, want LICENSE", got)
	}
	p, err := ipk.QPQ(ipk.QPQOptions{Version: "0.1.0", Arch: "x86_64", Binary: []byte("bin"), FilesDir: "../openwrt/files", License: ipk.QPQLicense})
	if err != nil {
		t.Fatal(err)
	}
	if p.Control.License != ipk.QPQLicense {
		t.Errorf("control License %q, want %q", p.Control.License, ipk.QPQLicense)
	}
}
