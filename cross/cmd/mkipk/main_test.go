package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quicproquo/qpq/cross/ipk"
)

// buildTiny cross-builds a hello-world for mips the way cross/build.sh builds qpq.
func buildTiny(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module tiny\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() { println(\"tiny\") }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "tiny")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=mips", "GOMIPS=softfloat", "GOWORK=off", "GOTOOLCHAIN=local")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

func TestBuildWritesPackage(t *testing.T) {
	bin := buildTiny(t)
	out := t.TempDir()
	opts := ipk.QPQOptions{Version: "0.1.0-1", Arch: "mips_24kc", FilesDir: "../../../openwrt/files", SourceDateEpoch: 1767225600}
	path, size, err := build("../../targets.txt", "mips_24kc", bin, out, opts)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "qpq_0.1.0-1_mips_24kc.ipk" || size <= 0 {
		t.Errorf("wrote %s (%d bytes)", path, size)
	}
	first, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Again, over the old file: same bytes.
	if _, _, err := build("../../targets.txt", "mips_24kc", bin, out, opts); err != nil {
		t.Fatal(err)
	}
	second, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(first) != string(second) {
		t.Error("rebuilding gave different bytes")
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 1 {
		t.Errorf("output dir holds %d entries, want only the package", len(entries))
	}
}

func TestBuildRejects(t *testing.T) {
	bin := buildTiny(t)
	opts := ipk.QPQOptions{Version: "0.1.0", FilesDir: "../../../openwrt/files"}
	tests := []struct{ arch, bin, want string }{
		{"mipsel_24kc", bin, "little-endian"},            // big-endian mips binary for mipsel
		{"x86_64", bin, "EM_X86_64"},                     // wrong machine
		{"mips_74kc", bin, "not in"},                     // unknown arch name
		{"mips_24kc", "../../targets.txt", "not an ELF"}, // not a binary
		{"mips_24kc", filepath.Join(t.TempDir(), "none"), "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.arch+" "+filepath.Base(tt.bin), func(t *testing.T) {
			o := opts
			o.Arch = tt.arch
			_, _, err := build("../../targets.txt", tt.arch, tt.bin, t.TempDir(), o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}
