// Package cross holds no code: its tests check the cross-build and OpenWrt packaging
// files (cross/*.sh, openwrt/Makefile, openwrt/files) with busybox sh, shellcheck and a
// stubbed procd, and that the feed Makefile and the SDK-free .ipk (package cross/ipk)
// agree. The tools live in the packages below: targets (the tables), ipk (the .ipk
// format), cmd/mkipk and cmd/size.
package cross
