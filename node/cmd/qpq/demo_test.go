package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestDemoDeliversAndStopsEveryProcess(t *testing.T) {
	_, here, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(here), "..", "..", "demo", "demo.sh")
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The README lists no python3 (or jq): a python3 first on PATH that
	// fails shows that the demo does not use it.
	stubs := t.TempDir()
	for _, tool := range []string{"python3", "python", "jq"} {
		if err := os.WriteFile(filepath.Join(stubs, tool), []byte("#!/bin/sh\necho \"$0 is not a prerequisite\" >&2\nexit 127\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Env = append(cleanEnv(), "QPQ_BIN="+qpqBin, "TMPDIR="+tmp, "PATH="+stubs+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"this crossed four routers", "node D holds 1 sealed message(s)", "node A holds 0 sealed message(s) and 1 receipt(s)"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out)
		}
	}
	// Every node it started is gone: no process mentions its work dir.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), tmp) {
			t.Fatalf("demo left a process running: %s", strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}
