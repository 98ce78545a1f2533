package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func shippedConfig(t *testing.T) string {
	_, here, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(here), "..", "..", "..", "openwrt", "files", "qpq.config")
}

func TestConfigCheckAcceptsShippedConfig(t *testing.T) {
	path := shippedConfig(t)
	code, out, errOut := runQPQ(t, nil, "config", "check", path)
	if code != 0 || out != path+": ok\n" {
		t.Fatalf("shipped config: exit %d\n%s%s", code, out, errOut)
	}
}

func TestConfigCheckReportsEachProblem(t *testing.T) {
	fp := strings.Repeat("a", 52)
	cases := []struct {
		name, body string
		want       []string // lines of output, FILE: prefix omitted
	}{
		{"bad port", "config qpq 'main'\n\toption listen '[::]:99999'\n",
			[]string{`2: main.listen: "[::]:99999": bad address "[::]:99999": port "99999" is not a number from 0 to 65535`}},
		{"bad fingerprint", "config qpq 'main'\n\toption enabled '1'\n\tlist peer '192.0.2.1:7443#nothex'\n",
			[]string{`3: main.peer: "192.0.2.1:7443#nothex": "nothex": not a fingerprint: 6 characters, want 52`}},
		{"unknown option", "config qpq 'main'\n\n\toption listne '[::]:7443'\n",
			[]string{"3: main.listne: unknown option"}},
		{"unterminated quote", "config qpq 'main'\n\toption listen '[::]:7443'\n\toption log_level 'info\n",
			[]string{"3: main.log_level: unterminated single quote: the file ends inside it"}},
		{"bad memory limit and level", "config qpq 'main'\n\toption mem_limit '48MB'\n\toption log_level 'loud'\n",
			[]string{`2: main.mem_limit: "48MB": want a size like 512K, 64M or 1G`, `3: main.log_level: "loud": want debug, info, warn or error`}},
		{"list for a single option", "config qpq 'main'\n\tlist listen '[::]:7443'\n",
			[]string{"2: main.listen: takes one value: write `option`, not `list`"}},
		{"no main section", "config qpq 'other'\n\toption listen '[::]:7443'\n",
			[]string{"1: other: unknown section; settings go in config qpq 'main'", "1: no config qpq 'main' section: the service cannot start without it"}},
		{"good peer is fine", "config qpq 'main'\n\tlist peer '192.0.2.1:7443#" + fp + "'\n", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "qpq")
			os.WriteFile(path, []byte(c.body), 0o600)
			code, out, _ := runQPQ(t, nil, "config", "check", path)
			if len(c.want) == 0 {
				if code != 0 {
					t.Fatalf("exit %d:\n%s", code, out)
				}
				return
			}
			var want []string
			for _, w := range c.want {
				want = append(want, path+":"+w)
			}
			if code != 1 || strings.TrimSpace(out) != strings.Join(want, "\n") {
				t.Fatalf("exit %d, output:\n%s\nwant:\n%s", code, out, strings.Join(want, "\n"))
			}
		})
	}
}

func TestConfigCheckUsage(t *testing.T) {
	if code, _, _ := runQPQ(t, nil, "config", "check"); code != 2 {
		t.Fatalf("no file: exit %d, want 2", code)
	}
	if code, _, _ := runQPQ(t, nil, "config", "lint", "x"); code != 2 {
		t.Fatalf("unknown subcommand: exit %d, want 2", code)
	}
	code, _, errOut := runQPQ(t, nil, "config", "check", filepath.Join(t.TempDir(), "missing"))
	if code != 1 || !strings.Contains(errOut, "missing") {
		t.Fatalf("missing file: exit %d %q", code, errOut)
	}
}

func TestSelftestPasses(t *testing.T) {
	code, out, errOut := runQPQ(t, nil, "selftest")
	if code != 0 || !strings.Contains(out, "selftest ok") || !strings.Contains(out, "client hello and health") {
		t.Fatalf("selftest: exit %d\n%s%s", code, out, errOut)
	}
}
