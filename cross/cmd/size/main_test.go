package main

import (
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (CI=true: a missing tool is a failure)", name)
		}
		t.Skipf("%s not found: skipping", name)
	}
}

// writeRandom writes n incompressible bytes, so xz and gzip sizes are close to n.
func writeRandom(t *testing.T, path string, n int) {
	t.Helper()
	r := rand.New(rand.NewPCG(uint64(n), 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// setup makes tables for three targets (two binaries) with small budgets.
func setup(t *testing.T) config {
	dir := t.TempDir()
	c := config{
		targets: filepath.Join(dir, "targets.txt"),
		budgets: filepath.Join(dir, "budgets.txt"),
		binDir:  filepath.Join(dir, "bin"),
		ipkDir:  filepath.Join(dir, "ipk"),
	}
	writeFile(t, c.targets, `
mips_24kc                 mips   -  softfloat  qpq_linux_mips   -
arm_cortex-a7_neon-vfpv4  arm    7  -          qpq_linux_arm    -
arm_cortex-a9_vfpv3-d16   arm    7  -          qpq_linux_arm    -
`)
	writeFile(t, c.budgets, `
xz   mips  20KiB
xz   arm   20KiB
ipk  *     10KiB
ipk  arm_cortex-a9_vfpv3-d16 30KiB
`)
	return c
}

func TestAllWithinBudget(t *testing.T) {
	needTool(t, "xz")
	needTool(t, "gzip")
	c := setup(t)
	writeRandom(t, filepath.Join(c.binDir, "qpq_linux_mips"), 10000)
	writeRandom(t, filepath.Join(c.binDir, "qpq_linux_arm"), 12000)
	writeRandom(t, filepath.Join(c.ipkDir, "qpq_1.0_mips_24kc.ipk"), 5000)
	writeRandom(t, filepath.Join(c.ipkDir, "qpq_1.0_arm_cortex-a7_neon-vfpv4.ipk"), 5000)
	writeRandom(t, filepath.Join(c.ipkDir, "qpq_1.0_arm_cortex-a9_vfpv3-d16.ipk"), 20000) // under its own 30KiB
	var out strings.Builder
	problems, err := run(c, &out)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Fatalf("problems: %q\n%s", problems, out.String())
	}
	text := out.String()
	for _, want := range []string{"qpq_linux_mips", "qpq_linux_arm", "gzip -9", "xz -9e", "xz < 0.02 MiB",
		"qpq_1.0_arm_cortex-a9_vfpv3-d16.ipk", "ipk < 0.03 MiB", "OK"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "OVER") || strings.Contains(text, "MISSING") {
		t.Errorf("output:\n%s", text)
	}
	// The arm binary is listed once although two arch names use it.
	if n := strings.Count(text, "qpq_linux_arm "); n != 1 {
		t.Errorf("qpq_linux_arm listed %d times:\n%s", n, text)
	}
}

func TestOverAndMissing(t *testing.T) {
	needTool(t, "xz")
	needTool(t, "gzip")
	c := setup(t)
	writeRandom(t, filepath.Join(c.binDir, "qpq_linux_mips"), 30000) // over 20KiB
	// qpq_linux_arm missing
	writeRandom(t, filepath.Join(c.ipkDir, "qpq_1.0_mips_24kc.ipk"), 11000) // over 10KiB
	writeRandom(t, filepath.Join(c.ipkDir, "qpq_1.0_arm_cortex-a7_neon-vfpv4.ipk"), 100)
	// arm_cortex-a9 package missing
	var out strings.Builder
	problems, err := run(c, &out)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(problems, "\n")
	for _, want := range []string{
		"qpq_linux_mips: xz size",
		"qpq_linux_arm: missing",
		"qpq_1.0_mips_24kc.ipk: ipk size",
		"arm_cortex-a9_vfpv3-d16: ",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("problems lack %q:\n%s", want, joined)
		}
	}
	if len(problems) != 4 {
		t.Errorf("%d problems, want 4:\n%s", len(problems), joined)
	}
	if !strings.Contains(out.String(), "OVER") || !strings.Contains(out.String(), "MISSING") {
		t.Errorf("table lacks OVER or MISSING:\n%s", out.String())
	}
}

func TestMissingBudgetIsAProblem(t *testing.T) {
	needTool(t, "xz")
	needTool(t, "gzip")
	c := setup(t)
	writeFile(t, c.budgets, "xz mips 20KiB\nipk * 10KiB\n") // nothing for arm
	writeRandom(t, filepath.Join(c.binDir, "qpq_linux_mips"), 100)
	writeRandom(t, filepath.Join(c.binDir, "qpq_linux_arm"), 100)
	c.noIpk = true
	var out strings.Builder
	problems, err := run(c, &out)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 1 || !strings.Contains(problems[0], "no xz budget for arm") {
		t.Fatalf("problems %q, want one about arm's missing budget", problems)
	}
}

func TestFindIpk(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "qpq_1.0_x86_64.ipk"), "x")
	if p, err := findIpk(dir, "", "x86_64"); err != nil || filepath.Base(p) != "qpq_1.0_x86_64.ipk" {
		t.Errorf("findIpk = %q, %v", p, err)
	}
	if _, err := findIpk(dir, "2.0", "x86_64"); err == nil || !strings.Contains(err.Error(), "qpq_2.0_x86_64.ipk missing") {
		t.Errorf("findIpk with another version: %v", err)
	}
	writeFile(t, filepath.Join(dir, "qpq_1.1_x86_64.ipk"), "x")
	if _, err := findIpk(dir, "", "x86_64"); err == nil || !strings.Contains(err.Error(), "-version") {
		t.Errorf("two versions: err = %v, want a hint to name one with -version", err)
	}
	if p, err := findIpk(dir, "1.1", "x86_64"); err != nil || filepath.Base(p) != "qpq_1.1_x86_64.ipk" {
		t.Errorf("findIpk 1.1 = %q, %v", p, err)
	}
}

// TestApkAgainstTheIpkBudget: with -apk, each arch's .apk is held to the same budget.
func TestApkAgainstTheIpkBudget(t *testing.T) {
	needTool(t, "xz")
	needTool(t, "gzip")
	c := setup(t)
	writeRandom(t, filepath.Join(c.binDir, "qpq_linux_mips"), 100)
	writeRandom(t, filepath.Join(c.binDir, "qpq_linux_arm"), 100)
	c.noIpk = false
	for _, a := range []string{"mips_24kc", "arm_cortex-a7_neon-vfpv4", "arm_cortex-a9_vfpv3-d16"} {
		writeRandom(t, filepath.Join(c.ipkDir, "qpq_1.0-1_"+a+".ipk"), 100)
	}
	c.apkDir = filepath.Join(t.TempDir(), "apk")
	c.apkVersion = "1.0-r1"
	writeRandom(t, filepath.Join(c.apkDir, "mips_24kc", "qpq-1.0-r1.apk"), 11000) // over 10KiB
	writeRandom(t, filepath.Join(c.apkDir, "arm_cortex-a7_neon-vfpv4", "qpq-1.0-r1.apk"), 100)
	// arm_cortex-a9's .apk missing
	var out strings.Builder
	problems, err := run(c, &out)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(problems, "\n")
	if len(problems) != 2 || !strings.Contains(joined, "mips_24kc/qpq-1.0-r1.apk: ipk size") ||
		!strings.Contains(joined, "arm_cortex-a9_vfpv3-d16: ") {
		t.Errorf("problems:\n%s\nwant the mips .apk over budget and the a9 one missing\n%s", joined, out.String())
	}
	if !strings.Contains(out.String(), "apk < 0.01 MiB") {
		t.Errorf("table lacks the .apk budget:\n%s", out.String())
	}

	// No apk dir (make apk not run): reported, not a problem.
	c.apkDir = filepath.Join(t.TempDir(), "none")
	out.Reset()
	if problems, err := run(c, &out); err != nil || len(problems) != 0 || !strings.Contains(out.String(), "no .apk in") {
		t.Errorf("without an apk dir: %v %q\n%s", err, problems, out.String())
	}
}
