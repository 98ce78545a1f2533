#!/usr/bin/env bash
# Cross-builds the static qpq binary for every target in cross/targets.txt.
#
#   cross/build.sh VERSION [GOARCH...]
#
# Each binary is built once (several OpenWrt architectures share one) into
# build/bin/qpq_linux_<goarch>: CGO_ENABLED=0, -trimpath, stripped (-s -w), VERSION
# stamped into node/buildinfo.Version. Naming GOARCHs builds only those. Builds run one
# after another, each with -p 2.
set -euo pipefail

usage() {
	echo "usage: cross/build.sh VERSION [GOARCH...]" >&2
	exit 2
}

[ $# -ge 1 ] || usage
version=$1
shift
case "$version" in
	'' | *[!0-9A-Za-z.+~-]* | [!0-9A-Za-z]*)
		echo "cross/build.sh: VERSION '$version' must start with a letter or digit and hold only letters, digits and . + ~ -" >&2
		exit 2
		;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

pkg=./node/cmd/qpq
ldflags="-s -w -X github.com/quicproquo/qpq/node/buildinfo.Version=$version"
# No inlining: about 14% smaller gzip'd (the .ipk budget binds first) for no
# throughput loss we could measure in node RPC load (see the issue notes).
gcflags="all=-l"
outdir=build/bin
mkdir -p "$outdir"

# Rows of targets.txt: arch goarch goarm gomips binary qemu ("-" = unset); one per binary.
rows=$(awk '!/^[[:space:]]*(#|$)/ && !seen[$5]++ { print $2, $3, $4, $5 }' cross/targets.txt)
[ -n "$rows" ] || { echo "cross/build.sh: no targets in cross/targets.txt" >&2; exit 1; }

# Any GOARCH named on the command line must be in the table.
for want in "$@"; do
	if ! awk -v w="$want" '$1 == w { found = 1 } END { exit !found }' <<<"$rows"; then
		echo "cross/build.sh: GOARCH '$want' is not in cross/targets.txt" >&2
		exit 2
	fi
done

built=0
while read -r goarch goarm gomips binary; do
	if [ $# -gt 0 ]; then
		match=0
		for want in "$@"; do
			[ "$want" = "$goarch" ] && match=1
		done
		[ "$match" = 1 ] || continue
	fi
	[ "$goarm" = - ] && goarm=
	[ "$gomips" = - ] && gomips=
	out=$outdir/$binary
	start=$SECONDS
	# GOAMD64 and GOARM64 pinned to the baseline so a developer's environment cannot
	# raise the CPU level the routers need.
	env CGO_ENABLED=0 GOOS=linux GOARCH="$goarch" GOARM="$goarm" GOMIPS="$gomips" \
		GOAMD64=v1 GOARM64=v8.0 \
		go build -p 2 -trimpath -buildvcs=false -gcflags "$gcflags" -ldflags "$ldflags" -o "$out.tmp" "$pkg"
	mv -f "$out.tmp" "$out"
	printf 'cross: %-7s %-27s %9d bytes  %3ds\n' "$goarch" "$out" "$(wc -c <"$out")" "$((SECONDS - start))"
	built=$((built + 1))
done <<<"$rows"

echo "cross: built $built binaries, version $version"
