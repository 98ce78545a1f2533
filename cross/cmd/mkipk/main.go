// Command mkipk writes the qpq .ipk for one OpenWrt architecture without the OpenWrt SDK.
//
//	go run ./cross/cmd/mkipk -version V -arch OPENWRT_ARCH -bin PATH -out DIR [-epoch SECONDS]
//	go run ./cross/cmd/mkipk -version V -all [-bindir build/bin] -out DIR [-epoch SECONDS]
//
// It writes DIR/qpq_V_ARCH.ipk (see package cross/ipk for the format) and prints its path
// and size; -all does so for every architecture in cross/targets.txt, each from its
// binary in -bindir. The arch must be in cross/targets.txt and the binary a static ELF
// executable for it. -epoch (default $SOURCE_DATE_EPOCH, else 0) fixes every member's time and the
// SourceDateEpoch field, so the same inputs give the same bytes. Run it from the
// repository root, or point -files and -targets at openwrt/files and cross/targets.txt.
// Exit status: 0 written, 1 failure, 2 usage error.
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
		version    = flag.String("version", "", "package version (required)")
		arch       = flag.String("arch", "", "OpenWrt architecture name, e.g. mips_24kc (required)")
		bin        = flag.String("bin", "", "the static qpq binary for that architecture (required)")
		out        = flag.String("out", "", "output directory (required)")
		epochText  = flag.String("epoch", os.Getenv("SOURCE_DATE_EPOCH"), "Unix time for every member and SourceDateEpoch; default $SOURCE_DATE_EPOCH, else 0")
		files      = flag.String("files", "openwrt/files", "directory holding qpq.init, qpq.config and qpq.keep")
		table      = flag.String("targets", "cross/targets.txt", "targets table")
		license    = flag.String("license", ipk.QPQLicense, "License field (SPDX); empty leaves it out")
		maintainer = flag.String("maintainer", ipk.QPQMaintainer, "Maintainer field; empty leaves it out")
		all        = flag.Bool("all", false, "one package per architecture in the targets table, binaries from -bindir")
		binDir     = flag.String("bindir", "build/bin", "with -all: directory of the cross-built binaries")
	)
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: mkipk -version V (-arch OPENWRT_ARCH -bin PATH | -all [-bindir DIR]) -out DIR [-epoch SECONDS] [flags]")
		flag.PrintDefaults()
	}
	flag.Parse()
	usage := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "mkipk: "+format+"\n", args...)
		flag.Usage()
		os.Exit(2)
	}
	if flag.NArg() > 0 {
		usage("unexpected argument %q", flag.Arg(0))
	}
	required := []struct{ name, v string }{{"-version", *version}, {"-out", *out}}
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
	var epoch int64
	if s := strings.TrimSpace(*epochText); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			usage("-epoch %q is not a Unix time in seconds", *epochText)
		}
		epoch = n
	}

	opts := ipk.QPQOptions{
		Version: *version, FilesDir: *files, SourceDateEpoch: epoch,
		License: *license, Maintainer: *maintainer,
	}
	jobs := [][2]string{{*arch, *bin}}
	if *all {
		ts, err := targets.Load(*table)
		if err != nil {
			fmt.Fprintln(os.Stderr, "mkipk:", err)
			os.Exit(1)
		}
		jobs = jobs[:0]
		for _, t := range ts {
			jobs = append(jobs, [2]string{t.Arch, filepath.Join(*binDir, t.Binary)})
		}
	}
	for _, j := range jobs {
		o := opts
		o.Arch = j[0]
		path, size, err := build(*table, j[0], j[1], *out, o)
		if err != nil {
			fmt.Fprintf(os.Stderr, "mkipk: %s: %v\n", j[0], err)
			os.Exit(1)
		}
		fmt.Printf("mkipk: %-50s %9d bytes\n", path, size)
	}
}

// build checks arch and the binary against the targets table, then writes the package.
func build(table, arch, bin, out string, o ipk.QPQOptions) (path string, size int, err error) {
	ts, err := targets.Load(table)
	if err != nil {
		return "", 0, err
	}
	t, ok := targets.Find(ts, arch)
	if !ok {
		return "", 0, fmt.Errorf("arch %q is not in %s (%s)", arch, table, strings.Join(targets.Archs(ts), ", "))
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
	path, err = p.WriteFile(out)
	if err != nil {
		return "", 0, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return path, int(fi.Size()), nil
}
