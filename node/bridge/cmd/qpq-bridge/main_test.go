package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

func runArgs(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb, func(string) string { return "" })
	return code, out.String(), errb.String()
}

// An operator who leaves out what a bridge cannot run without is told
// which settings, and no bridge starts.
func TestMissingBridgeSettingsAreNamed(t *testing.T) {
	code, _, stderr := runArgs(t, "--data", t.TempDir(), "--listen", "127.0.0.1:0")
	if code != exitUsage {
		t.Fatalf("exit %d, want %d; %s", code, exitUsage, stderr)
	}
	for _, want := range []string{"--bridge-island", "--bridge-secret", "--bridge-allow"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not name %s:\n%s", want, stderr)
		}
	}
}

// qpq-bridge id prints what the other operators list: the fingerprint
// (allow list) and the peer id (peer address), the same on every call.
func TestIDPrintsFingerprintAndPeerID(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "b")
	code, first, stderr := runArgs(t, "id", "--data", dir)
	if code != exitOK || !strings.Contains(first, "fingerprint ") || !strings.Contains(first, "peer id     12D3KooW") {
		t.Fatalf("exit %d:\n%s%s", code, first, stderr)
	}
	if _, again, _ := runArgs(t, "id", "--data", dir); again != first {
		t.Fatalf("a second id differs:\n%s\n%s", first, again)
	}
}

// A listed bridge that the allow list does not accept is a configuration
// error, named.
func TestPeerOutsideAllowListRefused(t *testing.T) {
	dir := t.TempDir()
	_, other, _ := runArgs(t, "id", "--data", filepath.Join(dir, "other"))
	peer := strings.Fields(strings.Split(other, "\n")[1])[2]
	code, _, stderr := runArgs(t, "--data", filepath.Join(dir, "b"), "--listen", "127.0.0.1:0", "--bridge-island", "nord",
		"--bridge-secret", "sixteen-chars-ok", "--bridge-listen", "/ip4/127.0.0.1/udp/0/quic-v1",
		"--bridge-allow", strings.Repeat("a", 52), "--bridge-peer", "/ip4/127.0.0.1/udp/9/quic-v1/p2p/"+peer)
	if code != exitUsage || !strings.Contains(stderr, "not in --bridge-allow") {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
}
