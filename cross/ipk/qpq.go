package ipk

import (
	"fmt"
	"os"
	"path/filepath"
)

// Where the qpq package puts its files on the router, and their modes (those OpenWrt's
// INSTALL_BIN, INSTALL_CONF and INSTALL_DATA give).
const (
	QPQBinPath    = "/usr/bin/qpq"
	QPQInitPath   = "/etc/init.d/qpq"
	QPQConfigPath = "/etc/config/qpq"
	QPQKeepPath   = "/lib/upgrade/keep.d/qpq"

	QPQBinMode    = 0o755
	QPQInitMode   = 0o755
	QPQConfigMode = 0o600
	QPQKeepMode   = 0o644
)

// The files under openwrt/files that go into the package, by the path they take.
var qpqSources = []struct {
	name, dst string
	mode      os.FileMode
}{
	{"qpq.init", QPQInitPath, QPQInitMode},
	{"qpq.config", QPQConfigPath, QPQConfigMode},
	{"qpq.keep", QPQKeepPath, QPQKeepMode},
}

// QPQDescription is the package description, as in openwrt/Makefile.
const QPQDescription = `qpq is an end-to-end encrypted mesh messenger. This node links to neighbouring
routers over QUIC, stores sealed messages for people who are offline and forwards
them hop by hop. It never sees a plaintext or a sender.`

// The user and group the service runs as (openwrt/files/qpq.init's QPQ_USER), with a
// fixed id (7443, the QUIC port's number; no OpenWrt package takes it) so files keep
// their owner across a reflash that keeps /etc/qpq. default_postinst creates them from
// the control field, as the SDK does from openwrt/Makefile's USERID.
const (
	QPQUser        = "qpq"
	QPQUID         = 7443
	QPQRequireUser = "qpq=7443:qpq=7443"
)

// QPQPostinstPkg is the package's own install step (openwrt/Makefile's
// Package/qpq/postinst; an .ipk carries it as postinst-pkg, which default_postinst sources
// once the qpq user exists). It hands the node's data dir to that user, so keys a root-run
// 0.1 left there (root's, mode 0600) stay the node's identity; the init script does the
// same at every start for the dirs uci names. Numeric ids from the root's own passwd,
// since an image build's host does not know the user.
const QPQPostinstPkg = `#!/bin/sh
# Hand /etc/qpq (keys from a root-run 0.1 included) to the qpq user.
qpq_ids="$(grep -s '^qpq:' "${IPKG_INSTROOT}/etc/passwd" | head -n 1 | cut -d: -f3,4)"
if [ -n "$qpq_ids" ] && [ -d "${IPKG_INSTROOT}/etc/qpq" ]; then
	chown -R "$qpq_ids" "${IPKG_INSTROOT}/etc/qpq"
	chmod 0700 "${IPKG_INSTROOT}/etc/qpq"
fi
`

// QPQLicense is qpq's license (the LICENSE file at the repository's top),
// as openwrt/Makefile's PKG_LICENSE gives it.
const QPQLicense = "Apache-2.0"

// QPQMaintainer is the packages' Maintainer field, as openwrt/Makefile's PKG_MAINTAINER
// gives it: the maintainers as the repository's commits name their author.
const QPQMaintainer = "qpq maintainers <maintainers@users.noreply.r-seed-9b324d54.example>"

// QPQOptions is what a qpq package is made from.
type QPQOptions struct {
	Version         string // package version
	Arch            string // OpenWrt architecture name
	Binary          []byte // the static qpq binary for Arch
	FilesDir        string // openwrt/files: qpq.init, qpq.config, qpq.keep
	SourceDateEpoch int64  // Unix seconds: the SourceDateEpoch field and every member's time
	License         string // SPDX expression; empty leaves the field out
	Maintainer      string // "Name <email>"; empty leaves the field out
}

// QPQ returns the qpq package: /usr/bin/qpq, the procd init script, the uci config as a
// conffile and the sysupgrade keep list, with the control fields OpenWrt's feed Makefile
// (openwrt/Makefile) would give it.
func QPQ(o QPQOptions) (*Package, error) {
	p := &Package{
		Control: Control{
			Package:         "qpq",
			Version:         o.Version,
			Depends:         "libc",
			Source:          "feeds/qpq/openwrt",
			SourceName:      "qpq",
			License:         o.License,
			Section:         "net",
			RequireUser:     QPQRequireUser,
			SourceDateEpoch: o.SourceDateEpoch,
			URL:             "https://github.com/quicproquo/qpq",
			Maintainer:      o.Maintainer,
			Architecture:    o.Arch,
			Description:     QPQDescription,
		},
		Conffiles:   []string{QPQConfigPath},
		PostinstPkg: QPQPostinstPkg,
		Files:       []File{{Path: QPQBinPath, Mode: QPQBinMode, Data: o.Binary}},
	}
	for _, s := range qpqSources {
		b, err := os.ReadFile(filepath.Join(o.FilesDir, s.name))
		if err != nil {
			return nil, fmt.Errorf("ipk: qpq package file: %w", err)
		}
		p.Files = append(p.Files, File{Path: s.dst, Mode: s.mode, Data: b})
	}
	return p, nil
}
