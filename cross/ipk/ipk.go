// Package ipk assembles OpenWrt .ipk packages without the OpenWrt SDK, in the form opkg
// accepts today: a gzip'd tar (not an ar archive) of ./debian-binary, ./control.tar.gz and
// ./data.tar.gz. It follows what OpenWrt's ipkg-build produces: control fields in
// OpenWrt's order, Installed-Size as the length of the uncompressed data tar, postinst and
// prerm that hand over to default_postinst and default_prerm from /lib/functions.sh (and,
// as the SDK does for a recipe's Package/NAME/postinst, a postinst-pkg that
// default_postinst runs after creating the Require-User users), GNU
// tar headers with numeric owner 0/0, names sorted, and every member's time fixed.
//
// Output is reproducible: the same Package gives the same bytes (gzip streams carry no
// name and no time).
package ipk

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Control holds the fields of the control file. Empty fields are left out, as OpenWrt
// does; Installed-Size is computed.
type Control struct {
	Package         string // package name, [a-z0-9.+-]
	Version         string // package version; may not contain '_', ':' or white space
	Depends         string // e.g. "libc"
	Source          string // where the package's recipe lives, e.g. feeds/qpq/openwrt
	SourceName      string // the recipe's PKG_NAME
	License         string // SPDX expression
	Section         string // e.g. net
	RequireUser     string // users and groups default_postinst creates, OpenWrt's USERID: "user=uid:group=gid"
	SourceDateEpoch int64  // Unix seconds; also every member's modification time; 0 leaves the field out
	URL             string // project home page
	Maintainer      string // "Name <email>"
	Architecture    string // OpenWrt architecture name, as in the router's opkg.conf
	Description     string // one or more lines; blank lines are dropped
}

// File is one regular file in the package's data.
type File struct {
	Path string      // absolute path on the router, e.g. /usr/bin/qpq
	Mode fs.FileMode // permission bits, e.g. 0o755
	Data []byte
}

// Package is everything an .ipk holds.
type Package struct {
	Control
	Conffiles []string // absolute paths of files opkg keeps when the user has changed them; each must be in Files
	Files     []File
	// PostinstPkg is the package's own install script (a recipe's Package/NAME/postinst):
	// default_postinst sources it after creating RequireUser's users and before starting
	// the init script. Empty leaves it out.
	PostinstPkg string
}

// Modes of the members this package writes besides the Files.
const (
	dirMode     = 0o755
	controlMode = 0o644
	scriptMode  = 0o755
)

// postinst and prerm follow OpenWrt's default scripts: without /lib/functions.sh (an
// offline install into an image root) they do nothing; otherwise default_postinst
// enables and starts the init script, default_prerm stops and disables it.
const (
	postinst = `#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. "${IPKG_INSTROOT}/lib/functions.sh"
default_postinst "$0" "$@"
`
	prerm = `#!/bin/sh
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. "${IPKG_INSTROOT}/lib/functions.sh"
default_prerm "$0" "$@"
`
)

var (
	// requireUserRE is what default_postinst's add_group_and_user parses: space-separated
	// user[=uid]:group[=gid][:extra groups] tuples.
	requireUserRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]*(=[0-9]+)?(:[a-z_][a-z0-9_-]*(=[0-9]+)?)?( [a-z_][a-z0-9_-]*(=[0-9]+)?(:[a-z_][a-z0-9_-]*(=[0-9]+)?)?)*$`)
	nameRE        = regexp.MustCompile(`^[a-z0-9][a-z0-9.+-]*$`)
	versionRE     = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+~-]*$`)
	archRE        = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)
)

// FileName is the package's file name, NAME_VERSION_ARCH.ipk.
func (p *Package) FileName() string {
	return p.Package + "_" + p.Version + "_" + p.Architecture + ".ipk"
}

// Validate returns every problem with p, joined, or nil.
func (p *Package) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !nameRE.MatchString(p.Package) {
		bad("package name %q must match %s", p.Package, nameRE)
	}
	if !versionRE.MatchString(p.Version) {
		bad("version %q must match %s", p.Version, versionRE)
	}
	if !archRE.MatchString(p.Architecture) {
		bad("architecture %q must match %s", p.Architecture, archRE)
	}
	if strings.TrimSpace(p.Description) == "" {
		bad("description is empty")
	}
	if p.RequireUser != "" && !requireUserRE.MatchString(p.RequireUser) {
		bad("require-user %q must be user=uid:group=gid tuples", p.RequireUser)
	}
	if p.SourceDateEpoch < 0 {
		bad("source date epoch %d is negative", p.SourceDateEpoch)
	}
	for _, f := range []struct{ name, v string }{
		{"depends", p.Depends}, {"source", p.Source}, {"source name", p.SourceName},
		{"license", p.License}, {"section", p.Section}, {"url", p.URL}, {"maintainer", p.Maintainer},
	} {
		if strings.ContainsAny(f.v, "\n\r") {
			bad("%s %q spans lines", f.name, f.v)
		}
	}
	if len(p.Files) == 0 {
		bad("no files")
	}
	seen := map[string]bool{}
	for _, f := range p.Files {
		switch {
		case !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/":
			bad("file path %q must be absolute and clean", f.Path)
		case seen[f.Path]:
			bad("file %s listed twice", f.Path)
		case f.Mode&^fs.ModePerm != 0:
			bad("file %s: mode %v has more than permission bits", f.Path, f.Mode)
		}
		seen[f.Path] = true
	}
	for _, f := range p.Files {
		if !path.IsAbs(f.Path) {
			continue // reported above
		}
		for dir := path.Dir(f.Path); dir != "/"; dir = path.Dir(dir) {
			if seen[dir] {
				bad("file %s is inside file %s", f.Path, dir)
			}
		}
	}
	for _, c := range p.Conffiles {
		if !seen[c] {
			bad("conffile %s is not one of the files", c)
		}
	}
	return errors.Join(errs...)
}

// Build returns the .ipk's bytes.
func (p *Package) Build() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("ipk: %w", err)
	}
	mtime := time.Unix(p.SourceDateEpoch, 0)

	dataTar, err := tarOf(dataEntries(p.Files), mtime)
	if err != nil {
		return nil, fmt.Errorf("ipk: data.tar: %w", err)
	}
	dataGz, err := gzipOf(dataTar)
	if err != nil {
		return nil, fmt.Errorf("ipk: data.tar.gz: %w", err)
	}
	ctl := []entry{
		{name: "control", mode: controlMode, data: []byte(p.controlText(int64(len(dataTar))))},
		{name: "postinst", mode: scriptMode, data: []byte(postinst)},
		{name: "prerm", mode: scriptMode, data: []byte(prerm)},
	}
	if p.PostinstPkg != "" {
		ctl = append(ctl, entry{name: "postinst-pkg", mode: scriptMode, data: []byte(p.PostinstPkg)})
	}
	if len(p.Conffiles) > 0 {
		cf := slices.Sorted(slices.Values(p.Conffiles))
		ctl = append(ctl, entry{name: "conffiles", mode: controlMode, data: []byte(strings.Join(cf, "\n") + "\n")})
	}
	controlTar, err := tarOf(withDirs(ctl), mtime)
	if err != nil {
		return nil, fmt.Errorf("ipk: control.tar: %w", err)
	}
	controlGz, err := gzipOf(controlTar)
	if err != nil {
		return nil, fmt.Errorf("ipk: control.tar.gz: %w", err)
	}
	// The outer members in Debian's order (debian-binary first); opkg looks them up by name.
	outer := []entry{
		{name: "debian-binary", mode: controlMode, data: []byte("2.0\n")},
		{name: "control.tar.gz", mode: controlMode, data: controlGz},
		{name: "data.tar.gz", mode: controlMode, data: dataGz},
	}
	outerTar, err := tarOf(outer, mtime)
	if err != nil {
		return nil, fmt.Errorf("ipk: outer tar: %w", err)
	}
	out, err := gzipOf(outerTar)
	if err != nil {
		return nil, fmt.Errorf("ipk: outer gzip: %w", err)
	}
	return out, nil
}

// WriteFile builds p and writes it to dir/FileName(), replacing any older file of that
// name only once the new one is complete. It returns the path written.
func (p *Package) WriteFile(dir string) (string, error) {
	b, err := p.Build()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("ipk: %w", err)
	}
	dst := filepath.Join(dir, p.FileName())
	tmp, err := os.CreateTemp(dir, ".ipk-*")
	if err != nil {
		return "", fmt.Errorf("ipk: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return "", fmt.Errorf("ipk: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return "", fmt.Errorf("ipk: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("ipk: close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("ipk: %w", err)
	}
	return dst, nil
}

// ControlFieldOrder is the order OpenWrt writes control fields in (those this package
// uses; Description comes last).
var ControlFieldOrder = []string{
	"Package", "Version", "Depends", "Source", "SourceName", "License", "Section",
	"Require-User", "SourceDateEpoch", "URL", "Maintainer", "Architecture", "Installed-Size", "Description",
}

// controlText renders the control file, leaving out empty fields.
func (p *Package) controlText(installedSize int64) string {
	var b strings.Builder
	field := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	epoch := ""
	if p.SourceDateEpoch > 0 {
		epoch = strconv.FormatInt(p.SourceDateEpoch, 10)
	}
	field("Package", p.Package)
	field("Version", p.Version)
	field("Depends", p.Depends)
	field("Source", p.Source)
	field("SourceName", p.SourceName)
	field("License", p.License)
	field("Section", p.Section)
	field("Require-User", p.RequireUser)
	field("SourceDateEpoch", epoch)
	field("URL", p.URL)
	field("Maintainer", p.Maintainer)
	field("Architecture", p.Architecture)
	field("Installed-Size", strconv.FormatInt(installedSize, 10))
	first := true
	for _, line := range strings.Split(p.Description, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if first {
			fmt.Fprintf(&b, "Description: %s\n", line)
			first = false
		} else {
			fmt.Fprintf(&b, " %s\n", line)
		}
	}
	return b.String()
}

// entry is one tar member, named relative to the archive's root without "./".
type entry struct {
	name string // "" is the root directory itself
	dir  bool
	mode int64
	data []byte
}

// dataEntries turns files into tar entries, with every parent directory.
func dataEntries(files []File) []entry {
	es := make([]entry, 0, len(files))
	for _, f := range files {
		es = append(es, entry{name: strings.TrimPrefix(f.Path, "/"), mode: int64(f.Mode.Perm()), data: f.Data})
	}
	return withDirs(es)
}

// withDirs adds the root and every parent directory of es and sorts the result the way
// GNU tar --sort=name walks a tree: depth first, names within a directory in byte order.
func withDirs(es []entry) []entry {
	dirs := map[string]bool{"": true}
	for _, e := range es {
		for d := path.Dir(e.name); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	out := slices.Clone(es)
	for d := range dirs {
		out = append(out, entry{name: d, dir: true, mode: dirMode})
	}
	slices.SortFunc(out, func(a, b entry) int {
		return slices.Compare(components(a.name), components(b.name))
	})
	return out
}

func components(name string) []string {
	if name == "" {
		return nil
	}
	return strings.Split(name, "/")
}

// tarOf writes es as a GNU tar with numeric owner 0/0 and every time set to mtime. Names
// start with "./" as ipkg-build's do; directories end in "/".
func tarOf(es []entry, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := &tar.Header{
			Name:    "./" + e.name,
			Mode:    e.mode,
			ModTime: mtime,
			Format:  tar.FormatGNU,
		}
		if e.dir {
			h.Typeflag = tar.TypeDir
			if e.name != "" {
				h.Name += "/"
			}
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("%s: %w", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// gzipOf compresses b at the best level, with no file name and no time in the header
// (what gzip -n writes), marking the stream as made on Unix.
func gzipOf(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	zw.OS = 3 // Unix, as gzip writes on Linux
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
