// Command mkapk writes the qpq .apk (apk v3, OpenWrt 25.12's package manager) for one
// OpenWrt architecture, with the same files, conffile and maintainer scripts as the .ipk
// that mkipk writes, by handing a staged tree to the real `apk mkpkg` as OpenWrt's
// package-pack.mk does.
//
//	go run ./cross/cmd/mkapk -version V -arch OPENWRT_ARCH -bin PATH -out DIR [-apk PATH] [-epoch SECONDS]
//	go run ./cross/cmd/mkapk -version V -all [-bindir build/bin] -out DIR [-apk PATH] [-epoch SECONDS]
//
// It writes DIR/ARCH/qpq-V.apk (apk's own pkgname-spec, one directory per architecture as
// in OpenWrt's feeds) and prints its path and size; -all does so for every architecture in
// cross/targets.txt. V must be a version apk accepts: MAJOR.MINOR.PATCH-rN, e.g. 0.1.0-r1
// (apk refuses Debian's 0.1.0-1). -apk defaults to $QPQ_OWTOOLS/bin/apk. -epoch (default
// $SOURCE_DATE_EPOCH, else 0) fixes every file's time and the build time, so the same
// inputs give the same bytes. Exit status: 0 written, 1 failure, 2 usage error.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/quicproquo/qpq/cross/ipk"
	"github.com/quicproquo/qpq/cross/targets"
)

func main() {
	var (
		version    = flag.String("version", "", "package version in apk's scheme, e.g. 0.1.0-r1 (required)")
		arch       = flag.String("arch", "", "OpenWrt architecture name, e.g. mips_24kc (required)")
		bin        = flag.String("bin", "", "the static qpq binary for that architecture (required)")
		out        = flag.String("out", "", "output directory; the package goes to OUT/ARCH/ (required)")
		apkBin     = flag.String("apk", defaultApk(), "apk-tools 3 binary that runs `apk mkpkg`")
		epochText  = flag.String("epoch", os.Getenv("SOURCE_DATE_EPOCH"), "Unix time for every file and the build time; default $SOURCE_DATE_EPOCH, else 0")
		files      = flag.String("files", "openwrt/files", "directory holding qpq.init, qpq.config and qpq.keep")
		table      = flag.String("targets", "cross/targets.txt", "targets table")
		license    = flag.String("license", ipk.QPQLicense, "license (SPDX); empty leaves it out")
		maintainer = flag.String("maintainer", ipk.QPQMaintainer, "maintainer; empty leaves it out")
		all        = flag.Bool("all", false, "one package per architecture in the targets table, binaries from -bindir")
		binDir     = flag.String("bindir", "build/bin", "with -all: directory of the cross-built binaries")
	)
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: mkapk -version V (-arch OPENWRT_ARCH -bin PATH | -all [-bindir DIR]) -out DIR [-apk PATH] [-epoch SECONDS] [flags]")
		flag.PrintDefaults()
	}
	flag.Parse()
	usage := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "mkapk: "+format+"\n", args...)
		flag.Usage()
		os.Exit(2)
	}
	if flag.NArg() > 0 {
		usage("unexpected argument %q", flag.Arg(0))
	}
	required := []struct{ name, v string }{{"-version", *version}, {"-out", *out}, {"-apk", *apkBin}}
	if *all {
		if *arch != "" || *bin != "" {
			usage("-all builds every arch: leave out -arch and -bin")
		}
	} else {
		required = append(required, struct{ name, v string }{"-arch", *arch}, struct{ name, v string }{"-bin", *bin})
	}
	for _, f := range required {
		if f.v == "" {
			usage("%s is required", f.name)
		}
	}
	if err := checkVersion(*version); err != nil {
		usage("%v", err)
	}
	var epoch int64
	if s := strings.TrimSpace(*epochText); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			usage("-epoch %q is not a Unix time in seconds", *epochText)
		}
		epoch = n
	}

	ts, err := targets.Load(*table)
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkapk:", err)
		os.Exit(1)
	}
	jobs := [][2]string{{*arch, *bin}}
	if *all {
		jobs = jobs[:0]
		for _, t := range ts {
			jobs = append(jobs, [2]string{t.Arch, filepath.Join(*binDir, t.Binary)})
		}
	}
	for _, j := range jobs {
		o := ipk.QPQOptions{
			Version: *version, Arch: j[0], FilesDir: *files, SourceDateEpoch: epoch,
			License: *license, Maintainer: *maintainer,
		}
		path, size, err := build(ts, *table, j[1], filepath.Join(*out, j[0]), *apkBin, o)
		if err != nil {
			fmt.Fprintf(os.Stderr, "mkapk: %s: %v\n", j[0], err)
			os.Exit(1)
		}
		fmt.Printf("mkapk: %-50s %9d bytes\n", path, size)
	}
}

// defaultApk is $QPQ_OWTOOLS/bin/apk, or "" when QPQ_OWTOOLS is not set.
func defaultApk() string {
	if d := os.Getenv("QPQ_OWTOOLS"); d != "" {
		return filepath.Join(d, "bin", "apk")
	}
	return ""
}

// build checks arch and the binary against the targets table, then writes the package.
func build(ts []targets.Target, table, bin, out, apkBin string, o ipk.QPQOptions) (path string, size int64, err error) {
	t, ok := targets.Find(ts, o.Arch)
	if !ok {
		return "", 0, fmt.Errorf("arch %q is not in %s (%s)", o.Arch, table, strings.Join(targets.Archs(ts), ", "))
	}
	if err := t.CheckELF(bin); err != nil {
		return "", 0, err
	}
	o.Binary, err = os.ReadFile(bin)
	if err != nil {
		return "", 0, fmt.Errorf("read binary: %w", err)
	}
	p, err := ipk.QPQ(o)
	if err != nil {
		return "", 0, err
	}
	path, err = writeApk(p, apkBin, out)
	if err != nil {
		return "", 0, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return path, fi.Size(), nil
}
