package ipk

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const testEpoch = 1767225600 // 2026-01-01T00:00:00Z

// needTool skips the test when a command is missing, or fails it under CI=true.
func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (CI=true: a missing tool is a failure)", name)
		}
		t.Skipf("%s not found: skipping", name)
	}
}

// run runs a command and returns its stdout, failing the test on error.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TZ=UTC", "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// fakeQPQ is the qpq package made from a small fake binary and the real openwrt/files.
func fakeQPQ(t *testing.T) *Package {
	t.Helper()
	p, err := QPQ(QPQOptions{
		Version:         "1.2.3-1",
		Arch:            "mips_24kc",
		Binary:          []byte("\x7fELF not really a binary\n"),
		FilesDir:        filepath.Join("..", "..", "openwrt", "files"),
		SourceDateEpoch: testEpoch,
		License:         "MIT",
		Maintainer:      "Test <test@example.org>",
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// member is one line of `tar --numeric-owner --full-time -tvf`.
type member struct {
	mode, owner, name string
	size              int64
	mtime             string
}

func listTar(t *testing.T, dir, archive string) []member {
	t.Helper()
	out := run(t, dir, "tar", "--numeric-owner", "--full-time", "-tvzf", archive)
	var ms []member
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 6 {
			t.Fatalf("tar listing line %q: want 6 fields", line)
		}
		size, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			t.Fatalf("tar listing line %q: size: %v", line, err)
		}
		ms = append(ms, member{mode: f[0], owner: f[1], size: size, mtime: f[3] + " " + f[4], name: f[5]})
	}
	return ms
}

func names(ms []member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.name)
	}
	return out
}

func TestQPQPackageUnpacksWithTar(t *testing.T) {
	needTool(t, "tar")
	needTool(t, "gzip")
	p := fakeQPQ(t)
	dir := t.TempDir()
	path, err := p.WriteFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := filepath.Base(path), "qpq_1.2.3-1_mips_24kc.ipk"; got != want {
		t.Fatalf("file name %s, want %s", got, want)
	}
	wantTime := time.Unix(testEpoch, 0).UTC().Format("2006-01-02 15:04:05")

	// The outer archive: three members, Debian's order, owner 0/0, fixed time.
	outer := listTar(t, dir, path)
	if got, want := names(outer), []string{"./debian-binary", "./control.tar.gz", "./data.tar.gz"}; !slices.Equal(got, want) {
		t.Fatalf("outer members %q, want %q", got, want)
	}
	for _, m := range outer {
		if m.owner != "0/0" || m.mode != "-rw-r--r--" || m.mtime != wantTime {
			t.Errorf("outer %s: %s %s %s, want -rw-r--r-- 0/0 %s", m.name, m.mode, m.owner, m.mtime, wantTime)
		}
	}
	ex := filepath.Join(dir, "x")
	if err := os.Mkdir(ex, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, ex, "tar", "-xzf", path)
	if b, err := os.ReadFile(filepath.Join(ex, "debian-binary")); err != nil || string(b) != "2.0\n" {
		t.Fatalf("debian-binary = %q, %v; want \"2.0\\n\"", b, err)
	}

	// control.tar.gz
	ctl := listTar(t, ex, "control.tar.gz")
	wantCtl := map[string]string{
		"./":             "drwxr-xr-x",
		"./conffiles":    "-rw-r--r--",
		"./control":      "-rw-r--r--",
		"./postinst":     "-rwxr-xr-x",
		"./postinst-pkg": "-rwxr-xr-x",
		"./prerm":        "-rwxr-xr-x",
	}
	checkMembers(t, "control.tar.gz", ctl, []string{"./", "./conffiles", "./control", "./postinst", "./postinst-pkg", "./prerm"}, wantCtl, wantTime)
	cdir := filepath.Join(ex, "control")
	if err := os.Mkdir(cdir, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, cdir, "tar", "-xzf", filepath.Join(ex, "control.tar.gz"))
	conffiles, err := os.ReadFile(filepath.Join(cdir, "conffiles"))
	if err != nil {
		t.Fatal(err)
	}
	if string(conffiles) != "/etc/config/qpq\n" {
		t.Errorf("conffiles = %q, want \"/etc/config/qpq\\n\"", conffiles)
	}
	for _, script := range []string{"postinst", "prerm"} {
		b, err := os.ReadFile(filepath.Join(cdir, script))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "#!/bin/sh\n") || !strings.Contains(string(b), "/lib/functions.sh") ||
			!strings.Contains(string(b), "default_"+script+" ") {
			t.Errorf("%s does not hand over to default_%s from /lib/functions.sh:\n%s", script, script, b)
		}
	}

	// The package's own step, which default_postinst sources once the user exists.
	if b, err := os.ReadFile(filepath.Join(cdir, "postinst-pkg")); err != nil || string(b) != QPQPostinstPkg {
		t.Errorf("postinst-pkg = %q, %v; want QPQPostinstPkg", b, err)
	}

	// control fields, in OpenWrt's order, with Installed-Size the uncompressed data tar.
	control, err := os.ReadFile(filepath.Join(cdir, "control"))
	if err != nil {
		t.Fatal(err)
	}
	fields, values := parseControl(t, string(control))
	if !slices.Equal(fields, ControlFieldOrder) {
		t.Errorf("control fields %q, want %q", fields, ControlFieldOrder)
	}
	dataTar := run(t, ex, "gzip", "-dc", "data.tar.gz")
	want := map[string]string{
		"Package":         "qpq",
		"Version":         "1.2.3-1",
		"Depends":         "libc",
		"SourceName":      "qpq",
		"License":         "MIT",
		"Section":         "net",
		"Require-User":    "qpq=7443:qpq=7443",
		"SourceDateEpoch": strconv.Itoa(testEpoch),
		"Maintainer":      "Test <test@example.org>",
		"Architecture":    "mips_24kc",
		"Installed-Size":  strconv.Itoa(len(dataTar)),
	}
	for k, v := range want {
		if values[k] != v {
			t.Errorf("control %s = %q, want %q", k, values[k], v)
		}
	}
	if !strings.HasPrefix(values["Description"], "qpq is an end-to-end encrypted mesh messenger.") {
		t.Errorf("control Description = %q", values["Description"])
	}

	// data.tar.gz: every file at its path and mode, parents included, owner 0/0.
	data := listTar(t, ex, "data.tar.gz")
	wantData := map[string]string{
		"./":                       "drwxr-xr-x",
		"./etc/":                   "drwxr-xr-x",
		"./etc/config/":            "drwxr-xr-x",
		"./etc/config/qpq":         "-rw-------",
		"./etc/init.d/":            "drwxr-xr-x",
		"./etc/init.d/qpq":         "-rwxr-xr-x",
		"./lib/":                   "drwxr-xr-x",
		"./lib/upgrade/":           "drwxr-xr-x",
		"./lib/upgrade/keep.d/":    "drwxr-xr-x",
		"./lib/upgrade/keep.d/qpq": "-rw-r--r--",
		"./usr/":                   "drwxr-xr-x",
		"./usr/bin/":               "drwxr-xr-x",
		"./usr/bin/qpq":            "-rwxr-xr-x",
	}
	order := []string{"./", "./etc/", "./etc/config/", "./etc/config/qpq", "./etc/init.d/", "./etc/init.d/qpq",
		"./lib/", "./lib/upgrade/", "./lib/upgrade/keep.d/", "./lib/upgrade/keep.d/qpq", "./usr/", "./usr/bin/", "./usr/bin/qpq"}
	checkMembers(t, "data.tar.gz", data, order, wantData, wantTime)

	ddir := filepath.Join(ex, "data")
	if err := os.Mkdir(ddir, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, ddir, "tar", "-xzf", filepath.Join(ex, "data.tar.gz"))
	for _, f := range p.Files {
		b, err := os.ReadFile(filepath.Join(ddir, f.Path))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, f.Data) {
			t.Errorf("%s: content differs from what was packed", f.Path)
		}
	}
	keep, _ := os.ReadFile(filepath.Join(ddir, "lib/upgrade/keep.d/qpq"))
	if !slices.Contains(strings.Fields(string(keep)), "/etc/qpq/") {
		t.Errorf("keep.d/qpq = %q, want it to keep /etc/qpq/", keep)
	}
}

func checkMembers(t *testing.T, archive string, ms []member, order []string, modes map[string]string, mtime string) {
	t.Helper()
	if got := names(ms); !slices.Equal(got, order) {
		t.Errorf("%s members\n got %q\nwant %q", archive, got, order)
	}
	for _, m := range ms {
		if want, ok := modes[m.name]; !ok || m.mode != want {
			t.Errorf("%s: %s mode %s, want %s", archive, m.name, m.mode, want)
		}
		if m.owner != "0/0" {
			t.Errorf("%s: %s owner %s, want 0/0", archive, m.name, m.owner)
		}
		if m.mtime != mtime {
			t.Errorf("%s: %s time %s, want %s", archive, m.name, m.mtime, mtime)
		}
	}
}

// parseControl returns the field names in order and their values (continuation lines
// joined with "\n").
func parseControl(t *testing.T, text string) ([]string, map[string]string) {
	t.Helper()
	var order []string
	values := map[string]string{}
	last := ""
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		if strings.HasPrefix(line, " ") {
			if last == "" {
				t.Fatalf("control: continuation line %q before any field", line)
			}
			values[last] += "\n" + strings.TrimPrefix(line, " ")
			continue
		}
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			t.Fatalf("control: line %q is not \"Field: value\"", line)
		}
		if _, dup := values[k]; dup {
			t.Fatalf("control: field %s twice", k)
		}
		order = append(order, k)
		values[k] = v
		last = k
	}
	return order, values
}

func TestBuildIsReproducible(t *testing.T) {
	p := fakeQPQ(t)
	a, err := p.Build()
	if err != nil {
		t.Fatal(err)
	}
	q := fakeQPQ(t)
	slices.Reverse(q.Files) // input order must not matter
	b, err := q.Build()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("two builds of the same package differ")
	}

	// And through WriteFile, into two directories.
	d1, d2 := t.TempDir(), t.TempDir()
	p1, err := p.WriteFile(d1)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := q.WriteFile(d2)
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := os.ReadFile(p1)
	b2, _ := os.ReadFile(p2)
	if !bytes.Equal(b1, b2) || !bytes.Equal(b1, a) {
		t.Fatal("written packages differ")
	}

	// A different epoch gives different bytes (the time really is in the archive).
	q.SourceDateEpoch++
	c, err := q.Build()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, c) {
		t.Fatal("changing the epoch did not change the package")
	}
}

// gzipHeader checks a gzip member carries no file name and no time (gzip -n).
func gzipHeader(t *testing.T, what string, b []byte) {
	t.Helper()
	if len(b) < 10 || b[0] != 0x1f || b[1] != 0x8b {
		t.Fatalf("%s is not gzip", what)
	}
	if flg := b[3]; flg&0x08 != 0 || flg&0x10 != 0 {
		t.Errorf("%s: gzip header has a name or comment (FLG %#x)", what, flg)
	}
	if mtime := b[4:8]; !bytes.Equal(mtime, []byte{0, 0, 0, 0}) {
		t.Errorf("%s: gzip header time %v, want 0", what, mtime)
	}
}

func TestGzipHasNoNameOrTime(t *testing.T) {
	needTool(t, "tar")
	p := fakeQPQ(t)
	dir := t.TempDir()
	path, err := p.WriteFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	gzipHeader(t, "ipk", b)
	run(t, dir, "tar", "-xzf", path)
	for _, name := range []string{"control.tar.gz", "data.tar.gz"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		gzipHeader(t, name, b)
	}
}

// busybox tar is close to what opkg's own unpacker (derived from busybox) accepts.
func TestBusyboxTarReadsPackage(t *testing.T) {
	needTool(t, "busybox")
	p := fakeQPQ(t)
	dir := t.TempDir()
	path, err := p.WriteFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := run(t, dir, "busybox", "tar", "-tzf", path)
	if got := strings.Fields(out); !slices.Equal(got, []string{"./debian-binary", "./control.tar.gz", "./data.tar.gz"}) {
		t.Fatalf("busybox tar lists %q", got)
	}
	run(t, dir, "busybox", "tar", "-xzf", path)
	for _, inner := range []string{"control.tar.gz", "data.tar.gz"} {
		if out := run(t, dir, "busybox", "tar", "-tzf", inner); !strings.Contains(out, "./") {
			t.Errorf("busybox tar lists %s as %q", inner, out)
		}
	}
}

func TestControlLeavesOutEmptyFields(t *testing.T) {
	p := fakeQPQ(t)
	p.License, p.Maintainer, p.SourceDateEpoch = "", "", 0
	text := p.controlText(123)
	for _, f := range []string{"License:", "Maintainer:", "SourceDateEpoch:"} {
		if strings.Contains(text, f) {
			t.Errorf("control has %s though it is empty:\n%s", f, text)
		}
	}
	if !strings.Contains(text, "\nInstalled-Size: 123\n") {
		t.Errorf("control lacks Installed-Size:\n%s", text)
	}
}

func TestValidateRejects(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Package)
		want   string
	}{
		{"upper-case name", func(p *Package) { p.Package = "QPQ" }, "package name"},
		{"version with underscore", func(p *Package) { p.Version = "1_2" }, "version"},
		{"version with space", func(p *Package) { p.Version = "1 2" }, "version"},
		{"empty version", func(p *Package) { p.Version = "" }, "version"},
		{"empty arch", func(p *Package) { p.Architecture = "" }, "architecture"},
		{"empty description", func(p *Package) { p.Description = " \n" }, "description"},
		{"relative path", func(p *Package) { p.Files[0].Path = "usr/bin/qpq" }, "absolute"},
		{"unclean path", func(p *Package) { p.Files[0].Path = "/usr//bin/qpq" }, "absolute and clean"},
		{"duplicate file", func(p *Package) { p.Files = append(p.Files, p.Files[0]) }, "twice"},
		{"file under file", func(p *Package) {
			p.Files = append(p.Files, File{Path: "/usr/bin/qpq/x", Mode: 0o644})
		}, "inside file"},
		{"setuid mode", func(p *Package) { p.Files[0].Mode |= os.ModeSetuid }, "permission bits"},
		{"conffile not packed", func(p *Package) { p.Conffiles = append(p.Conffiles, "/etc/config/other") }, "conffile"},
		{"multi-line field", func(p *Package) { p.URL = "a\nb" }, "spans lines"},
		{"no files", func(p *Package) { p.Files, p.Conffiles = nil, nil }, "no files"},
		{"require-user without name", func(p *Package) { p.RequireUser = "=7443:qpq" }, "require-user"},
		{"require-user on two lines", func(p *Package) { p.RequireUser = "qpq\nx" }, "require-user"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := fakeQPQ(t)
			tt.modify(p)
			_, err := p.Build()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Build: err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestQPQMissingFilesDir(t *testing.T) {
	_, err := QPQ(QPQOptions{Version: "1", Arch: "x86_64", FilesDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "qpq.init") {
		t.Fatalf("err = %v, want one naming qpq.init", err)
	}
}

func TestMaintainerScriptsPassShellcheck(t *testing.T) {
	needTool(t, "shellcheck")
	needTool(t, "busybox")
	dir := t.TempDir()
	for name, text := range map[string]string{"postinst": postinst, "prerm": prerm, "postinst-pkg": QPQPostinstPkg} {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
		run(t, dir, "busybox", "sh", "-n", f)
		// SC1091: /lib/functions.sh exists on the router only.
		run(t, dir, "shellcheck", "-e", "SC1091", f)
	}
}

// TestMakefileMatchesQPQUser: the SDK's package (openwrt/Makefile) creates the same user
// and runs the same install step as the .ipk this package builds.
func TestMakefileMatchesQPQUser(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "openwrt", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	mk := string(b)
	if m := regexp.MustCompile(`(?m)^\s*USERID:=(.*)$`).FindStringSubmatch(mk); m == nil || m[1] != QPQRequireUser {
		t.Errorf("openwrt/Makefile USERID %q, want %q", m, QPQRequireUser)
	}
	m := regexp.MustCompile(`(?s)\ndefine Package/qpq/postinst\n(.*?)endef\n`).FindStringSubmatch(mk)
	if m == nil {
		t.Fatal("openwrt/Makefile has no Package/qpq/postinst")
	}
	// make turns $$ into $.
	if got := strings.ReplaceAll(m[1], "$$", "$"); got != QPQPostinstPkg {
		t.Errorf("openwrt/Makefile's postinst\n%s\nwant QPQPostinstPkg\n%s", got, QPQPostinstPkg)
	}
}
