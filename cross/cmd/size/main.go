// Command size prints the flash figures of the cross-built binaries and the .ipk
// packages and checks them against cross/budgets.txt (DESIGN "Budgets").
//
//	go run ./cross/cmd/size [-version V] [-bin build/bin] [-ipk build/ipk] [-apk build/apk -apk-version V]
//
// For each binary in cross/targets.txt it prints the raw size, `gzip -9` and `xz -9e`
// (single-threaded) sizes and its budget; for each OpenWrt architecture the .ipk size and
// its budget, and with -apk, when that directory exists, the .apk (APK/ARCH/qpq-V.apk)
// against the same budget (the two carry the same files to the same flash). It exits 1 when a figure is not strictly under its budget, when a file is
// missing or when a target has no budget, naming each; 2 on a usage error. Run it from
// the repository root (paths are relative to it).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/quicproquo/qpq/cross/targets"
)

func main() {
	var c config
	flag.StringVar(&c.targets, "targets", "cross/targets.txt", "targets table")
	flag.StringVar(&c.budgets, "budgets", "cross/budgets.txt", "budgets table")
	flag.StringVar(&c.binDir, "bin", "build/bin", "directory of the cross-built binaries")
	flag.StringVar(&c.ipkDir, "ipk", "build/ipk", "directory of the .ipk packages")
	flag.StringVar(&c.version, "version", "", "package version in the .ipk names; empty: the one qpq_*_ARCH.ipk per arch")
	flag.BoolVar(&c.noIpk, "no-ipk", false, "check the binaries only")
	flag.StringVar(&c.apkDir, "apk", "", "directory of the .apk packages (ARCH/qpq-V.apk); skipped when it does not exist")
	flag.StringVar(&c.apkVersion, "apk-version", "", "package version in the .apk names; empty: the one qpq-*.apk per arch")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: size [flags]")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "size: unexpected argument %q\n", flag.Arg(0))
		flag.Usage()
		os.Exit(2)
	}
	problems, err := run(c, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "size:", err)
		os.Exit(1)
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "size: %d problem(s):\n", len(problems))
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "  "+p)
		}
		os.Exit(1)
	}
}

// config holds the command's flags.
type config struct {
	targets, budgets string
	binDir, ipkDir   string
	version          string
	noIpk            bool
	apkDir           string
	apkVersion       string
}

// run prints the tables to w and returns every budget breach, missing file and missing
// budget; err is for failures to read the tables or to run gzip and xz.
func run(c config, w io.Writer) (problems []string, err error) {
	ts, err := targets.Load(c.targets)
	if err != nil {
		return nil, err
	}
	bs, err := targets.LoadBudgets(c.budgets)
	if err != nil {
		return nil, err
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "binary\traw\tgzip -9\txz -9e\tbudget\tresult")
	for _, t := range targets.Binaries(ts) {
		path := filepath.Join(c.binDir, t.Binary)
		fi, err := os.Stat(path)
		if err != nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t\tMISSING\n", t.Binary)
			problems = append(problems, fmt.Sprintf("%s: missing (run make cross): %v", path, err))
			continue
		}
		figures := map[string]int64{targets.KindRaw: fi.Size()}
		if figures[targets.KindGzip], err = compressedSize(path, "gzip", "-9", "-n", "-c"); err != nil {
			return nil, err
		}
		if figures[targets.KindXz], err = compressedSize(path, "xz", "-9e", "-T1", "-c"); err != nil {
			return nil, err
		}
		budget, result, ps := check(bs, t.Binary, t.GOARCH, figures, targets.KindXz,
			[]string{targets.KindRaw, targets.KindGzip, targets.KindXz})
		problems = append(problems, ps...)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Binary,
			mib(figures[targets.KindRaw]), mib(figures[targets.KindGzip]), mib(figures[targets.KindXz]), budget, result)
	}
	if err := tw.Flush(); err != nil {
		return nil, fmt.Errorf("write table: %w", err)
	}
	if c.noIpk {
		return problems, nil
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "package\tsize\tbudget\tresult")
	for _, t := range ts {
		path, err := findIpk(c.ipkDir, c.version, t.Arch)
		if err != nil {
			fmt.Fprintf(tw, "%s\t-\t\tMISSING\n", t.Arch)
			problems = append(problems, fmt.Sprintf("%s: %v (run make ipk)", t.Arch, err))
			continue
		}
		fi, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		figures := map[string]int64{targets.KindIpk: fi.Size()}
		budget, result, ps := check(bs, filepath.Base(path), t.Arch, figures, targets.KindIpk, []string{targets.KindIpk})
		problems = append(problems, ps...)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", filepath.Base(path), mib(fi.Size()), budget, result)
	}
	if err := tw.Flush(); err != nil {
		return nil, fmt.Errorf("write table: %w", err)
	}
	if c.apkDir == "" {
		return problems, nil
	}
	if _, err := os.Stat(c.apkDir); err != nil {
		fmt.Fprintf(w, "\nno .apk in %s (make apk): not checked\n", c.apkDir)
		return problems, nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "package\tsize\tbudget\tresult")
	for _, t := range ts {
		path, err := findApk(c.apkDir, c.apkVersion, t.Arch)
		if err != nil {
			fmt.Fprintf(tw, "%s\t-\t\tMISSING\n", t.Arch)
			problems = append(problems, fmt.Sprintf("%s: %v (run make apk)", t.Arch, err))
			continue
		}
		fi, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		name := t.Arch + "/" + filepath.Base(path)
		figures := map[string]int64{targets.KindIpk: fi.Size()}
		budget, result, ps := check(bs, name, t.Arch, figures, targets.KindIpk, []string{targets.KindIpk})
		problems = append(problems, ps...)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, mib(fi.Size()), strings.Replace(budget, "ipk <", "apk <", 1), result)
	}
	if err := tw.Flush(); err != nil {
		return nil, fmt.Errorf("write table: %w", err)
	}
	return problems, nil
}

// findApk returns dir/ARCH/qpq-VERSION.apk, or with no version the one qpq-*.apk there.
func findApk(dir, version, arch string) (string, error) {
	pattern := filepath.Join(dir, arch, "qpq-*.apk")
	if version != "" {
		pattern = filepath.Join(dir, arch, "qpq-"+version+".apk")
	}
	matches, err := filepath.Glob(pattern)
	if err != nil {
		return "", fmt.Errorf("look for the package: %w", err)
	}
	switch len(matches) {
	case 0:
		return "", fmt.Errorf("%s missing", pattern)
	case 1:
		return matches[0], nil
	default:
		return "", fmt.Errorf("%d versions in %s (%s); name one with -apk-version", len(matches), filepath.Dir(pattern), strings.Join(matches, ", "))
	}
}

// check compares figures with the budgets for target. The kind named required must have
// a budget; the other kinds are checked when budgets.txt sets one. It returns the budget
// column, the result column and the problems.
func check(bs targets.Budgets, name, target string, figures map[string]int64, required string, kinds []string) (budget, result string, problems []string) {
	var cols []string
	over := false
	for _, kind := range kinds {
		b, ok := bs.Lookup(kind, target)
		if !ok {
			if kind == required {
				problems = append(problems, fmt.Sprintf("%s: no %s budget for %s in budgets.txt", name, kind, target))
				cols = append(cols, kind+" unbudgeted")
				over = true
			}
			continue
		}
		v := figures[kind]
		cols = append(cols, fmt.Sprintf("%s < %s (%.0f%%)", kind, mib(b.Limit), 100*float64(v)/float64(b.Limit)))
		if v >= b.Limit {
			over = true
			problems = append(problems, fmt.Sprintf("%s: %s size %s (%d bytes) is not under its budget %s (%d bytes)",
				name, kind, mib(v), v, b.Text, b.Limit))
		}
	}
	result = "OK"
	if over {
		result = "OVER"
	}
	return strings.Join(cols, ", "), result, problems
}

// findIpk returns dir/qpq_VERSION_ARCH.ipk, or with no version the one file matching
// qpq_*_ARCH.ipk.
func findIpk(dir, version, arch string) (string, error) {
	if version != "" {
		p := filepath.Join(dir, "qpq_"+version+"_"+arch+".ipk")
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s missing", p)
		}
		return p, nil
	}
	matches, err := filepath.Glob(filepath.Join(dir, "qpq_*_"+arch+".ipk"))
	if err != nil {
		return "", fmt.Errorf("look for the package: %w", err)
	}
	// An arch name can end another's (no such pair today): keep exact ones only.
	var exact []string
	for _, m := range matches {
		rest := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), "qpq_"), "_"+arch+".ipk")
		if !strings.Contains(rest, "_") {
			exact = append(exact, m)
		}
	}
	switch len(exact) {
	case 0:
		return "", fmt.Errorf("%s missing", filepath.Join(dir, "qpq_*_"+arch+".ipk"))
	case 1:
		return exact[0], nil
	default:
		return "", fmt.Errorf("%d versions in %s (%s); name one with -version", len(exact), dir, strings.Join(exact, ", "))
	}
}

// compressedSize runs a compressor writing to stdout and counts the bytes.
func compressedSize(path, name string, args ...string) (int64, error) {
	cmd := exec.Command(name, append(args, "--", path)...)
	var n countWriter
	var stderr strings.Builder
	cmd.Stdout = &n
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return 0, fmt.Errorf("%s is not installed: %w", name, err)
		}
		return 0, fmt.Errorf("%s %s: %w: %s", name, path, err, strings.TrimSpace(stderr.String()))
	}
	return int64(n), nil
}

// countWriter counts what is written to it.
type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

// mib formats a size in MiB with two decimals.
func mib(n int64) string {
	return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
}
