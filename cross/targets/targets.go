// Package targets reads the cross-build tables under cross/: targets.txt, which maps each
// OpenWrt architecture name to the Go settings and binary that serve it, and budgets.txt,
// which holds the flash budgets from DESIGN "Budgets". It also checks that a built binary
// is a static ELF executable for its target.
package targets

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// BinaryPrefix starts every cross-built binary's name; the goarch follows it
// (DESIGN "Names and defaults": build/bin/qpq_linux_<goarch>).
const BinaryPrefix = "qpq_linux_"

// Target is one row of targets.txt. Empty strings stand for the table's "-".
type Target struct {
	Arch   string // OpenWrt architecture name, e.g. mips_24kc; unique in the table
	GOARCH string // Go's GOARCH, e.g. mipsle
	GOARM  string // Go's GOARM (arm only), e.g. 7
	GOMIPS string // Go's GOMIPS (mips and mipsle only), e.g. softfloat
	Binary string // file name under build/bin, BinaryPrefix + GOARCH
	Qemu   string // qemu-user command that runs the binary here; empty when it runs natively
	Line   int    // line in the table, for messages
}

// Load reads and checks the targets table at path.
func Load(path string) ([]Target, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("targets: %w", err)
	}
	defer f.Close()
	return Parse(path, f)
}

// Parse reads and checks a targets table; name is used in messages. It returns every
// problem it finds, each as "name:line: problem".
func Parse(name string, r io.Reader) ([]Target, error) {
	var (
		out      []Target
		problems []error
		byArch   = map[string]int{}
		byBinary = map[string]Target{}
	)
	err := eachRow(r, func(line int, cols []string) {
		bad := func(format string, args ...any) {
			problems = append(problems, fmt.Errorf("%s:%d: %s", name, line, fmt.Sprintf(format, args...)))
		}
		if len(cols) != 6 {
			bad("want 6 columns (arch goarch goarm gomips binary qemu), got %d", len(cols))
			return
		}
		for i := range cols {
			if cols[i] == "-" {
				cols[i] = ""
			}
		}
		t := Target{Arch: cols[0], GOARCH: cols[1], GOARM: cols[2], GOMIPS: cols[3], Binary: cols[4], Qemu: cols[5], Line: line}
		switch {
		case t.Arch == "" || t.GOARCH == "" || t.Binary == "":
			bad("arch, goarch and binary must be set")
			return
		case t.GOARCH == "arm" && t.GOARM == "":
			bad("%s: goarch arm needs goarm", t.Arch)
		case t.GOARCH != "arm" && t.GOARM != "":
			bad("%s: goarm is for goarch arm only", t.Arch)
		case (t.GOARCH == "mips" || t.GOARCH == "mipsle") && t.GOMIPS == "":
			bad("%s: goarch %s needs gomips", t.Arch, t.GOARCH)
		case t.GOARCH != "mips" && t.GOARCH != "mipsle" && t.GOMIPS != "":
			bad("%s: gomips is for goarch mips and mipsle only", t.Arch)
		}
		if _, ok := machines[t.GOARCH]; !ok {
			bad("%s: goarch %q is not one this table knows (%s)", t.Arch, t.GOARCH, knownGOARCH())
		}
		if t.Binary != BinaryPrefix+t.GOARCH {
			bad("%s: binary %q should be %q", t.Arch, t.Binary, BinaryPrefix+t.GOARCH)
		}
		if prev, ok := byArch[t.Arch]; ok {
			bad("arch %s already on line %d", t.Arch, prev)
		}
		byArch[t.Arch] = line
		if prev, ok := byBinary[t.Binary]; ok && (prev.GOARCH != t.GOARCH || prev.GOARM != t.GOARM || prev.GOMIPS != t.GOMIPS) {
			bad("%s: binary %s is built with other settings on line %d", t.Arch, t.Binary, prev.Line)
		} else if !ok {
			byBinary[t.Binary] = t
		}
		out = append(out, t)
	})
	if err != nil {
		return nil, fmt.Errorf("targets: read %s: %w", name, err)
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("targets: %s lists no targets", name)
	}
	return out, nil
}

// Binaries returns the first row for each distinct binary, in table order.
func Binaries(ts []Target) []Target {
	seen := map[string]bool{}
	var out []Target
	for _, t := range ts {
		if !seen[t.Binary] {
			seen[t.Binary] = true
			out = append(out, t)
		}
	}
	return out
}

// Find returns the row for an OpenWrt architecture name.
func Find(ts []Target, arch string) (Target, bool) {
	for _, t := range ts {
		if t.Arch == arch {
			return t, true
		}
	}
	return Target{}, false
}

// Archs returns the OpenWrt architecture names in table order.
func Archs(ts []Target) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Arch
	}
	return out
}

// machine is what an ELF header must say for a goarch.
type machine struct {
	mach  elf.Machine
	class elf.Class
	order string // "little" or "big"
}

var machines = map[string]machine{
	"386":    {elf.EM_386, elf.ELFCLASS32, "little"},
	"amd64":  {elf.EM_X86_64, elf.ELFCLASS64, "little"},
	"arm":    {elf.EM_ARM, elf.ELFCLASS32, "little"},
	"arm64":  {elf.EM_AARCH64, elf.ELFCLASS64, "little"},
	"mips":   {elf.EM_MIPS, elf.ELFCLASS32, "big"},
	"mipsle": {elf.EM_MIPS, elf.ELFCLASS32, "little"},
}

func knownGOARCH() string {
	return "386, amd64, arm, arm64, mips, mipsle"
}

// CheckELF reports whether the file at path is a static ELF executable for t: the
// machine, word size and byte order match t.GOARCH and there is no program interpreter
// (a dynamically linked binary would not run on every router of that architecture).
func (t Target) CheckELF(path string) error {
	want, ok := machines[t.GOARCH]
	if !ok {
		return fmt.Errorf("targets: %s: unknown goarch %q", t.Arch, t.GOARCH)
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("targets: %s is not an ELF binary: %w", path, err)
	}
	defer f.Close()
	order := "little"
	if f.ByteOrder.String() == "BigEndian" {
		order = "big"
	}
	if f.Machine != want.mach || f.Class != want.class || order != want.order {
		return fmt.Errorf("targets: %s is %s %s %s-endian, %s (%s) needs %s %s %s-endian",
			path, f.Machine, f.Class, order, t.Arch, t.GOARCH, want.mach, want.class, want.order)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("targets: %s is an ELF %s, not an executable", path, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("targets: %s is dynamically linked (build it with CGO_ENABLED=0)", path)
		}
	}
	return nil
}

// Budget is one row of budgets.txt: a size limit for one kind of figure of one target.
type Budget struct {
	Kind   string // raw, gzip, xz or ipk
	Target string // goarch for raw, gzip and xz; OpenWrt arch or "*" for ipk
	Limit  int64  // bytes; a size is within budget when it is strictly under Limit
	Text   string // the limit as written, e.g. 3.5MiB
}

// Budgets is the whole budgets table.
type Budgets []Budget

// Budget kinds.
const (
	KindRaw  = "raw"
	KindGzip = "gzip"
	KindXz   = "xz"
	KindIpk  = "ipk"
)

// LoadBudgets reads and checks the budgets table at path.
func LoadBudgets(path string) (Budgets, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("budgets: %w", err)
	}
	defer f.Close()
	return ParseBudgets(path, f)
}

// ParseBudgets reads and checks a budgets table; name is used in messages.
func ParseBudgets(name string, r io.Reader) (Budgets, error) {
	var (
		out      Budgets
		problems []error
		seen     = map[string]int{}
	)
	err := eachRow(r, func(line int, cols []string) {
		bad := func(format string, args ...any) {
			problems = append(problems, fmt.Errorf("%s:%d: %s", name, line, fmt.Sprintf(format, args...)))
		}
		if len(cols) != 3 {
			bad("want 3 columns (kind target limit), got %d", len(cols))
			return
		}
		b := Budget{Kind: cols[0], Target: cols[1], Text: cols[2]}
		switch b.Kind {
		case KindRaw, KindGzip, KindXz, KindIpk:
		default:
			bad("kind %q is not raw, gzip, xz or ipk", b.Kind)
			return
		}
		n, err := ParseSize(b.Text)
		if err != nil {
			bad("%s %s: %v", b.Kind, b.Target, err)
			return
		}
		b.Limit = n
		key := b.Kind + " " + b.Target
		if prev, ok := seen[key]; ok {
			bad("%s already set on line %d", key, prev)
			return
		}
		seen[key] = line
		out = append(out, b)
	})
	if err != nil {
		return nil, fmt.Errorf("budgets: read %s: %w", name, err)
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return out, nil
}

// Lookup returns the budget for kind and target: the row naming the target, else the
// row for "*".
func (bs Budgets) Lookup(kind, target string) (Budget, bool) {
	var wild Budget
	found := false
	for _, b := range bs {
		if b.Kind != kind {
			continue
		}
		if b.Target == target {
			return b, true
		}
		if b.Target == "*" {
			wild, found = b, true
		}
	}
	return wild, found
}

// ParseSize reads a size: a whole number of bytes, or a number (a decimal fraction is
// allowed) followed by KiB, MiB or GiB, which are powers of 1024.
func ParseSize(s string) (int64, error) {
	num, mult := s, 1.0
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	if mult == 1 {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("size %q is not a positive number of bytes, or a number with KiB, MiB or GiB", s)
		}
		return n, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || math.IsInf(f, 0) || f*mult > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is not a positive number before its unit", s)
	}
	return int64(math.Round(f * mult)), nil
}

// eachRow calls fn with the whitespace-separated columns of every line that is not
// blank or a # comment.
func eachRow(r io.Reader, fn func(line int, cols []string)) error {
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		cols := strings.Fields(text)
		if len(cols) == 0 {
			continue
		}
		fn(line, cols)
	}
	return sc.Err()
}
