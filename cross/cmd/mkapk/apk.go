package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/quicproquo/qpq/cross/ipk"
)

// apkVersion is the part of apk's version grammar the qpq package uses: dotted numbers and
// a package release, -rN. apk refuses Debian's -N release.
var apkVersion = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*-r[0-9]+$`)

func checkVersion(v string) error {
	if !apkVersion.MatchString(v) {
		return fmt.Errorf("-version %q is not in apk's scheme MAJOR.MINOR.PATCH-rN (e.g. 0.1.0-r1)", v)
	}
	return nil
}

// The maintainer scripts, as OpenWrt 25.12's package-pack.mk writes them for an apk: the
// same steps as the .ipk's postinst and prerm, with the package named explicitly, as apk
// runs a script from a file whose name says nothing. default_postinst and default_prerm
// find the init script through /lib/apk/packages/NAME.list. apk runs post-upgrade, not
// post-install, on an upgrade: it is post-install with PKG_UPGRADE=1, as opkg sets it,
// so default_postinst restarts the service without enabling it again.
//
// The qpq user: apk has no Require-User field, so the package carries
// /lib/apk/packages/qpq.rusers (what add_group_and_user reads for an apk),
// and the package's own install step (ipk.QPQPostinstPkg, an .ipk's
// postinst-pkg, which default_postinst runs only from opkg's info dir) is
// inlined after the user exists.
var (
	handover    = "(\n" + strings.TrimPrefix(ipk.QPQPostinstPkg, "#!/bin/sh\n") + ")\n"
	postInstall = `#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. "${IPKG_INSTROOT}/lib/functions.sh"
export root="${IPKG_INSTROOT}"
export pkgname="qpq"
add_group_and_user
` + handover + `default_postinst
`
	postUpgrade  = "#!/bin/sh\nexport PKG_UPGRADE=1\n" + strings.TrimPrefix(postInstall, "#!/bin/sh\n")
	preDeinstall = `#!/bin/sh
[ -s "${IPKG_INSTROOT}/lib/functions.sh" ] || exit 0
. "${IPKG_INSTROOT}/lib/functions.sh"
export root="${IPKG_INSTROOT}"
export pkgname="qpq"
default_prerm
`
)

// apkMetaDir is where OpenWrt's apk packages carry their file list and conffiles
// (sysupgrade and default_postinst read them; apk itself protects all of /etc).
const apkMetaDir = "/lib/apk/packages"

// writeApk stages p's files, with OpenWrt's NAME.list and NAME.conffiles, and runs
// `apk mkpkg` on them; it returns the path of dir/NAME-VERSION.apk.
func writeApk(p *ipk.Package, apkBin, dir string) (string, error) {
	if err := p.Validate(); err != nil {
		return "", fmt.Errorf("apk: %w", err)
	}
	stage, err := os.MkdirTemp("", "mkapk-")
	if err != nil {
		return "", fmt.Errorf("apk: %w", err)
	}
	defer os.RemoveAll(stage)
	root := filepath.Join(stage, "root")

	files := slices.Clone(p.Files)
	listPath := apkMetaDir + "/" + p.Package + ".list"
	list := []string{listPath}
	for _, f := range p.Files {
		list = append(list, f.Path)
	}
	if len(p.Conffiles) > 0 {
		cfPath := apkMetaDir + "/" + p.Package + ".conffiles"
		list = append(list, cfPath)
		cf := slices.Sorted(slices.Values(p.Conffiles))
		files = append(files, ipk.File{Path: cfPath, Mode: 0o644, Data: []byte(strings.Join(cf, "\n") + "\n")})
	}
	if p.RequireUser != "" {
		ruPath := apkMetaDir + "/" + p.Package + ".rusers"
		list = append(list, ruPath)
		files = append(files, ipk.File{Path: ruPath, Mode: 0o644, Data: []byte(p.RequireUser + "\n")})
	}
	slices.Sort(list)
	files = append(files, ipk.File{Path: listPath, Mode: 0o644, Data: []byte(strings.Join(list, "\n") + "\n")})

	mtime := time.Unix(p.SourceDateEpoch, 0)
	for _, f := range files {
		dst := filepath.Join(root, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return "", fmt.Errorf("apk: stage: %w", err)
		}
		if err := os.WriteFile(dst, f.Data, f.Mode); err != nil {
			return "", fmt.Errorf("apk: stage: %w", err)
		}
		if err := os.Chmod(dst, f.Mode); err != nil { // past the umask
			return "", fmt.Errorf("apk: stage: %w", err)
		}
	}
	// Every directory and file gets the same time, so the package does not depend on when it was built.
	err = filepath.Walk(root, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() {
			if err := os.Chmod(path, 0o755); err != nil {
				return err
			}
		}
		return os.Chtimes(path, mtime, mtime)
	})
	if err != nil {
		return "", fmt.Errorf("apk: stage: %w", err)
	}
	args := []string{"mkpkg", "--no-xattrs", "--files", root}
	for _, sc := range []struct{ name, text string }{{"post-install", postInstall}, {"post-upgrade", postUpgrade}, {"pre-deinstall", preDeinstall}} {
		s := filepath.Join(stage, sc.name)
		if err := os.WriteFile(s, []byte(sc.text), 0o755); err != nil {
			return "", fmt.Errorf("apk: %w", err)
		}
		args = append(args, "--script", sc.name+":"+s)
	}
	info := []struct{ k, v string }{
		{"name", p.Package},
		{"version", p.Version},
		{"description", strings.Join(strings.Fields(p.Description), " ")},
		{"arch", p.Architecture},
		{"license", p.License},
		{"origin", p.Source},
		{"url", p.URL},
		{"maintainer", p.Maintainer},
		{"depends", p.Depends},
	}
	for _, i := range info {
		if i.v != "" {
			args = append(args, "--info", i.k+":"+i.v)
		}
	}
	if os.Geteuid() != 0 {
		// apk mkpkg records each file's owner by name, as the build machine resolves it;
		// OpenWrt's build runs it under fakeroot for the same reason.
		fmt.Fprintf(os.Stderr, "mkapk: warning: not root: the files are recorded as owned by uid %d, not root\n", os.Geteuid())
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("apk: %w", err)
	}
	dst := filepath.Join(dir, p.Package+"-"+p.Version+".apk")
	tmp := filepath.Join(dir, "."+p.Package+"-"+p.Version+".apk.tmp")
	args = append(args, "--output", tmp)
	cmd := exec.Command(apkBin, args...)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH="+strconv.FormatInt(p.SourceDateEpoch, 10))
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("apk mkpkg: %w\n%s", err, out)
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("apk: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("apk: %w", err)
	}
	return dst, nil
}
