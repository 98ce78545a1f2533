package targets

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestShippedTables(t *testing.T) {
	ts, err := Load("../targets.txt")
	if err != nil {
		t.Fatal(err)
	}
	// DESIGN "OpenWrt facts": the architecture names packages are made for.
	wantArchs := []string{"mips_24kc", "mipsel_24kc", "arm_cortex-a7_neon-vfpv4", "arm_cortex-a9_vfpv3-d16", "aarch64_cortex-a53", "x86_64"}
	if got := Archs(ts); !slices.Equal(got, wantArchs) {
		t.Errorf("archs %q, want %q", got, wantArchs)
	}
	want := map[string]Target{
		"qpq_linux_mips":   {GOARCH: "mips", GOMIPS: "softfloat"},
		"qpq_linux_mipsle": {GOARCH: "mipsle", GOMIPS: "softfloat"},
		"qpq_linux_arm":    {GOARCH: "arm", GOARM: "7"},
		"qpq_linux_arm64":  {GOARCH: "arm64"},
		"qpq_linux_amd64":  {GOARCH: "amd64"},
	}
	bins := Binaries(ts)
	if len(bins) != len(want) {
		t.Errorf("%d binaries, want %d", len(bins), len(want))
	}
	for _, b := range bins {
		w, ok := want[b.Binary]
		if !ok || w.GOARCH != b.GOARCH || w.GOARM != b.GOARM || w.GOMIPS != b.GOMIPS {
			t.Errorf("binary %s: %+v, want %+v", b.Binary, b, w)
		}
	}

	bs, err := LoadBudgets("../budgets.txt")
	if err != nil {
		t.Fatal(err)
	}
	// DESIGN "Budgets": xz under 3 MiB (3.5 MiB on x86_64), every .ipk under 4 MiB.
	for goarch, limit := range map[string]int64{"mips": 3 << 20, "mipsle": 3 << 20, "arm": 3 << 20, "arm64": 3 << 20, "amd64": 7 << 19} {
		if b, ok := bs.Lookup(KindXz, goarch); !ok || b.Limit != limit {
			t.Errorf("xz budget for %s = %+v, want %d bytes", goarch, b, limit)
		}
	}
	for _, arch := range wantArchs {
		if b, ok := bs.Lookup(KindIpk, arch); !ok || b.Limit != 4<<20 {
			t.Errorf("ipk budget for %s = %+v, want 4 MiB", arch, b)
		}
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct{ name, table, want string }{
		{"columns", "mips_24kc mips - softfloat qpq_linux_mips\n", "want 6 columns"},
		{"arm without goarm", "a arm - - qpq_linux_arm -\n", "needs goarm"},
		{"goarm on mips", "a mips 7 softfloat qpq_linux_mips -\n", "goarm is for"},
		{"mips without gomips", "a mips - - qpq_linux_mips -\n", "needs gomips"},
		{"gomips on arm64", "a arm64 - softfloat qpq_linux_arm64 -\n", "gomips is for"},
		{"binary name", "a arm64 - - qpq_arm64 -\n", `should be "qpq_linux_arm64"`},
		{"unknown goarch", "a riscv64 - - qpq_linux_riscv64 -\n", "not one this table knows"},
		{"duplicate arch", "a arm64 - - qpq_linux_arm64 -\na arm64 - - qpq_linux_arm64 -\n", "already on line 1"},
		{"binary settings differ", "a arm 7 - qpq_linux_arm -\nb arm 6 - qpq_linux_arm -\n", "other settings"},
		{"empty", "# nothing\n", "no targets"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.txt", strings.NewReader(tt.table))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestParseReportsLine(t *testing.T) {
	_, err := Parse("t.txt", strings.NewReader("# c\n\nx86_64 amd64 - - qpq_linux_amd64 -\nbad arm - - qpq_linux_arm -\n"))
	if err == nil || !strings.Contains(err.Error(), "t.txt:4: ") {
		t.Fatalf("err = %v, want it to name t.txt:4", err)
	}
}

func TestBudgets(t *testing.T) {
	bs, err := ParseBudgets("b.txt", strings.NewReader("xz mips 3MiB\nipk * 4MiB\nipk x86_64 4.5MiB # comment\nraw amd64 12000000\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := bs.Lookup(KindIpk, "x86_64"); !ok || b.Limit != 9<<19 {
		t.Errorf("ipk x86_64 = %+v, want the exact row", b)
	}
	if b, ok := bs.Lookup(KindIpk, "mips_24kc"); !ok || b.Limit != 4<<20 {
		t.Errorf("ipk mips_24kc = %+v, want the * row", b)
	}
	if _, ok := bs.Lookup(KindXz, "arm"); ok {
		t.Error("xz arm found, want none")
	}
	if b, _ := bs.Lookup(KindRaw, "amd64"); b.Limit != 12000000 {
		t.Errorf("raw amd64 = %+v", b)
	}

	for _, bad := range []struct{ table, want string }{
		{"xz mips\n", "want 3 columns"},
		{"lz mips 3MiB\n", "kind"},
		{"xz mips 3MB\n", "size"},
		{"xz mips 3MiB\nxz mips 4MiB\n", "already set on line 1"},
	} {
		if _, err := ParseBudgets("b.txt", strings.NewReader(bad.table)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: err = %v, want %q", bad.table, err, bad.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]int64{"1": 1, "4096": 4096, "1KiB": 1024, "3MiB": 3 << 20, "3.5MiB": 7 << 19, "1GiB": 1 << 30, "0.5KiB": 512}
	for s, want := range good {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0", "-1", "MiB", "3M", "3 MiB", "1e400MiB", "-2MiB", "x"} {
		if _, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q): no error", s)
		}
	}
}

// writeELF writes a minimal ELF header (and a PT_INTERP program header when dynamic)
// for the given machine.
func writeELF(t *testing.T, class elf.Class, order binary.ByteOrder, mach elf.Machine, dynamic bool) string {
	t.Helper()
	var buf bytes.Buffer
	ident := [elf.EI_NIDENT]byte{0x7f, 'E', 'L', 'F', byte(class), 0, byte(elf.EV_CURRENT)}
	if order == binary.LittleEndian {
		ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	} else {
		ident[elf.EI_DATA] = byte(elf.ELFDATA2MSB)
	}
	phnum := uint16(0)
	if dynamic {
		phnum = 1
	}
	var err error
	if class == elf.ELFCLASS32 {
		h := elf.Header32{Ident: ident, Type: uint16(elf.ET_EXEC), Machine: uint16(mach), Version: uint32(elf.EV_CURRENT),
			Phoff: 52, Ehsize: 52, Phentsize: 32, Phnum: phnum}
		err = binary.Write(&buf, order, h)
		if err == nil && dynamic {
			err = binary.Write(&buf, order, elf.Prog32{Type: uint32(elf.PT_INTERP)})
		}
	} else {
		h := elf.Header64{Ident: ident, Type: uint16(elf.ET_EXEC), Machine: uint16(mach), Version: uint32(elf.EV_CURRENT),
			Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: phnum}
		err = binary.Write(&buf, order, h)
		if err == nil && dynamic {
			err = binary.Write(&buf, order, elf.Prog64{Type: uint32(elf.PT_INTERP)})
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(p, buf.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckELF(t *testing.T) {
	mips := Target{Arch: "mips_24kc", GOARCH: "mips"}
	mipsle := Target{Arch: "mipsel_24kc", GOARCH: "mipsle"}
	arm64 := Target{Arch: "aarch64_cortex-a53", GOARCH: "arm64"}
	be, le := binary.BigEndian, binary.LittleEndian

	if err := mips.CheckELF(writeELF(t, elf.ELFCLASS32, be, elf.EM_MIPS, false)); err != nil {
		t.Errorf("mips binary for mips: %v", err)
	}
	if err := mipsle.CheckELF(writeELF(t, elf.ELFCLASS32, le, elf.EM_MIPS, false)); err != nil {
		t.Errorf("mipsle binary for mipsle: %v", err)
	}
	if err := arm64.CheckELF(writeELF(t, elf.ELFCLASS64, le, elf.EM_AARCH64, false)); err != nil {
		t.Errorf("arm64 binary for arm64: %v", err)
	}
	for name, c := range map[string]struct {
		t    Target
		path string
		want string
	}{
		"little-endian for mips": {mips, writeELF(t, elf.ELFCLASS32, le, elf.EM_MIPS, false), "big-endian"},
		"amd64 for arm64":        {arm64, writeELF(t, elf.ELFCLASS64, le, elf.EM_X86_64, false), "EM_AARCH64"},
		"dynamic":                {mips, writeELF(t, elf.ELFCLASS32, be, elf.EM_MIPS, true), "dynamically linked"},
		"not ELF":                {mips, filepath.Join("..", "targets.txt"), "not an ELF"},
	} {
		if err := c.t.CheckELF(c.path); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}
