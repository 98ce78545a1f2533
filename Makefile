# qpq: build, run, test. `make run` and `make test` are the two commands a
# fresh Debian machine needs: `make test` first checks for the tools it
# needs (.ci/deps) and installs what is missing when run as root, or says in
# one line what to run.

# The one version source. VERSION is the source's (the release tag is
# v$(VERSION)); RELEASE counts package revisions of it, as OpenWrt's
# PKG_RELEASE does (openwrt/Makefile's PKG_VERSION and PKG_RELEASE must equal
# these: cross/version_test.go). Each package manager spells it its own way:
# opkg (24.10, Gluon) 0.1.0-1, what the 24.10 SDK makes; apk (25.12) 0.1.0-r1,
# what the 25.12 SDK makes (apk refuses 0.1.0-1). `qpq version` says 0.1.0-1,
# as the SDK stamps it.
VERSION ?= 0.1.0
RELEASE ?= 1
IPK_VERSION := $(VERSION)-$(RELEASE)
APK_VERSION := $(VERSION)-r$(RELEASE)
GO      ?= go
PKG     := github.com/quicproquo/qpq
LDFLAGS := -s -w -X $(PKG)/node/buildinfo.Version=$(IPK_VERSION)
export CGO_ENABLED = 0

# Fuzz targets run for FUZZTIME each by `make test` (package:Func). A count,
# not a duration: a timed run can fail with "context deadline exceeded" when
# the deadline lands while the fuzzer minimizes a new input.
FUZZTIME ?= 20000x
FUZZ := \
	./schemas:FuzzDecodeMessages \
	./gossip:FuzzDecodeEnvelope \
	./mesh/identity:FuzzParseFingerprint \
	./mesh/link:FuzzParsePeerAddr \
	./mesh/onion:FuzzPeel \
	./mesh/onion:FuzzReassemble \
	./mesh/onion:FuzzParseReplyBlock \
	./mesh/cell:FuzzParse \
	./mesh/cell:FuzzStreamReceive \
	./node/config:FuzzParseValues \
	./node/uci:FuzzParse \
	./gossip/relay:FuzzReceiptSecret \
	./gossip/relay:FuzzDecodeFilter \
	./gossip/relay:FuzzParseSummary \
	./node/display:FuzzFormat \
	./node/e2e:FuzzOpenDM \
	./node/e2e:FuzzVerifyBundle \
	./node/e2e:FuzzParseShare \
	./node/e2e:FuzzLoadUser \
	./node/e2e:FuzzOpenChannel \
	./node/gaps:FuzzUnmarshal \
	./node/gaps:FuzzObserve \
	./node/home:FuzzDecodeContacts \
	./mesh/discovery:FuzzParseTXT \
	./mesh/descriptor:FuzzVerify

SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: demo all build run test unit race fuzz lint check-generated generate bench deps clean cross ipk size smoke bridge bridge-test bridge-bench

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o qpq ./node/cmd/qpq

# A node on loopback with its data under ./.qpq (mDNS stays off: DESIGN,
# "Running nodes on this machine"). Ctrl-C stops it cleanly.
run: build
	./qpq node --data ./.qpq --listen 127.0.0.1:7443 --mdns=false

# Everything CI runs: static checks, unit and process tests, the race
# detector, fuzz smoke, the router binaries under qemu, and the flash
# budget. The tool check runs first, and alone, even under -j. The unit tests then wait for OpenWrt's
# tools and the .ipk files (see owtools).
test: deps
	@$(MAKE) --no-print-directory QPQ_PACKAGE_TESTS=1 lint check-generated unit race fuzz smoke size bridge-test

# Four nodes in a line on loopback carry a DM to a user who is offline.
demo: build
	node/demo/demo.sh

# The 50-node broadcast simulation runs on its own with -v so that its
# counts (transmissions, raises, deliveries) show in every test log.
unit:
	$(GO) test -count=1 -timeout 15m -skip '^TestBroadcast50NodesExactlyOnce$$' ./...
	$(GO) test -count=1 -timeout 5m -run '^TestBroadcast50NodesExactlyOnce$$' -v ./gossip/relay

# The concurrency-heavy packages again under the race detector. The race
# runtime needs cgo: this job builds no shipped binary, so it alone sets
# CGO_ENABLED=1. Left out (unit runs them): the 50-node simulation, the
# namespace tests, and the store's 30,000-message flow and large purge
# (bulk single-writer work that takes minutes under -race).
RACE_PKGS := ./gossip/relay ./gossip/wire ./gossip/seen ./gossip/store \
	./node/daemon ./node/client ./mesh/link ./mesh/neighbours ./mesh/discovery ./mesh/cell
# The message capture runs 24 s of capture; its stream code runs under
# the race detector in mesh/cell's tests and the other decoy tests.
RACE_SKIP := ^(TestBroadcast50NodesExactlyOnce|TestNetns.*|TestFlowTwoNodes|TestPurgeLargeBacklog|TestDecoysHideWhenMessagesMove)$$
race:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 10m -skip '$(RACE_SKIP)' $(RACE_PKGS)

fuzz:
	@set -e; for t in $(FUZZ); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 100x $$pkg; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Schemas to Go. capnp comes from Debian's capnproto package; capnpc-go is
# built from the version pinned in go.mod (a `tool` there).
CAPNP_STD = $(shell $(GO) list -m -f '{{.Dir}}' capnproto.org/go/capnp/v3)/std
TOOLS := build/tools

$(TOOLS)/capnpc-go: go.mod go.sum
	@mkdir -p $(TOOLS)
	$(GO) build -o $@ capnproto.org/go/capnp/v3/capnpc-go

generate: $(TOOLS)/capnpc-go
	cd schemas && capnp compile -I "$(CAPNP_STD)" -o$(abspath $(TOOLS)/capnpc-go) *.capnp

# Fails when the committed Go differs from a fresh generation.
check-generated: $(TOOLS)/capnpc-go
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	cp schemas/*.capnp "$$tmp"/; \
	(cd "$$tmp" && capnp compile -I "$(CAPNP_STD)" -o$(abspath $(TOOLS)/capnpc-go) *.capnp) || exit 1; \
	for f in "$$tmp"/*.capnp.go; do \
		if ! cmp -s "$$f" schemas/$$(basename "$$f"); then \
			echo "schemas/$$(basename "$$f") is stale: run 'make generate' and commit it"; exit 1; \
		fi; \
	done; echo "generated code is current"

# Figures, no assertions: link setup and RPC round trip, and 256-byte
# messages through a line of four nodes (store on tmpfs, as on a router,
# and on disk: build/ or $TMPDIR, whichever stat -f says is not tmpfs),
# each beside a bare quic-go stream in the same run, with the relays' store
# commits per DM; a new neighbour catching up 10k envelopes and a
# 5,000-envelope burst over one link, against the rate limit's allowance;
# seal/open and store speeds; broadcast spread and delivery over 50
# simulated nodes (10% loss) and the seen-set's memory; a node's resident
# memory idle (60 s), under link + RPC load, and holding 10k envelopes
# with 16 links.
bench: build
	@mkdir -p build
	$(GO) test -run '^$$' -bench . -benchtime 2s -count 1 ./mesh/link > build/bench.txt || { cat build/bench.txt; exit 1; }
	@disk=$(CURDIR)/build/benchdisk; \
	if [ "$$(stat -f -c %T build)" = tmpfs ]; then disk=$${TMPDIR:-/tmp}/qpq-benchdisk; fi; \
	mkdir -p $$disk; \
	if [ "$$(stat -f -c %T $$disk)" = tmpfs ]; then echo "bench: build/ and $${TMPDIR:-/tmp} are tmpfs: the qpq-disk variants are skipped"; disk=; fi; \
	echo "line benchmarks: stores on /dev/shm and in $${disk:-(none)}"; \
	TMPDIR=/dev/shm QPQ_BENCH_DISK=$$disk $(GO) test -run '^$$' -bench 'Line|HopLatency|OnionLatency' -benchtime 300x -count 1 ./node/daemon >> build/bench.txt || { cat build/bench.txt; exit 1; }
	TMPDIR=/dev/shm $(GO) test -run '^$$' -bench 'CatchUp|Burst|Decoys' -benchtime 1x -count 1 ./node/daemon >> build/bench.txt || { cat build/bench.txt; exit 1; }
	TMPDIR=/dev/shm $(GO) test -run '^$$' -bench 'StreamLatency' -benchtime 10x -count 1 ./node/daemon >> build/bench.txt || { cat build/bench.txt; exit 1; }
	$(GO) test -run '^$$' -bench . -benchtime 1s -count 1 ./node/e2e ./gossip/store ./mesh/onion >> build/bench.txt || { cat build/bench.txt; exit 1; }
	$(GO) test -run '^$$' -bench 'Broadcast|SeenSet' -benchtime 1x -count 1 ./gossip/relay >> build/bench.txt || { cat build/bench.txt; exit 1; }
	TMPDIR=/dev/shm $(GO) test -run '^$$' -bench AntiEntropy -benchtime 10x -count 1 ./gossip/relay >> build/bench.txt || { cat build/bench.txt; exit 1; }
	$(GO) test -run '^$$' -bench Mesh500 -benchtime 1x -count 1 ./gossip/placement >> build/bench.txt || { cat build/bench.txt; exit 1; }
	@awk -f cross/benchratio.awk build/bench.txt
	$(GO) run ./cross/cmd/rssbench -bin ./qpq -idle 60s -load 30s -stored 10000 -stored-links 16 -stored-for 20s
	@$(MAKE) --no-print-directory bridge-bench

# The gateway build: qpq-bridge, a node that also joins other islands'
# bridges over go-libp2p, for x86_64 and aarch64 gateways, in
# build/bin/qpq-bridge_linux_<goarch>. It is its own module (node/bridge):
# go-libp2p needs an older quic-go than the router build, which keeps its
# own (cross/routerdeps_test.go checks the router binaries link no libp2p).
BRIDGE_ARCHS := amd64 arm64
bridge:
	@mkdir -p build/bin
	@set -e; for a in $(BRIDGE_ARCHS); do \
		(cd node/bridge && GOOS=linux GOARCH=$$a $(GO) build -tags bridge -trimpath -ldflags '$(LDFLAGS)' -o ../../build/bin/qpq-bridge_linux_$$a ./cmd/qpq-bridge); \
		echo "build/bin/qpq-bridge_linux_$$a $$(stat -c %s build/bin/qpq-bridge_linux_$$a) bytes"; \
	done

# The daemon's bridge links are built only with the bridge tag, so the
# router binary has none of them (node/daemon/bridge.go).
# bridge-test: the daemon's bridge tests (over a pipe) and the bridge
# module's (real libp2p hosts on 127.0.0.1), each also under -race.
BRIDGE_DAEMON_TESTS := ^TestBridge
bridge-test: bridge
	$(GO) vet -tags bridge ./node/daemon
	$(GO) test -tags bridge -count=1 -run '$(BRIDGE_DAEMON_TESTS)' ./node/daemon
	CGO_ENABLED=1 $(GO) test -tags bridge -race -count=1 -run '$(BRIDGE_DAEMON_TESTS)' ./node/daemon
	cd node/bridge && $(GO) vet -tags bridge ./... && $(GO) test -tags bridge -count=1 -timeout 10m ./...
	cd node/bridge && CGO_ENABLED=1 $(GO) test -tags bridge -race -count=1 -timeout 10m ./...

# The bridge's figures: its binary size, RSS idle and with two bridge
# links, and DM latency across a bridge beside a direct qpq link.
bridge-bench: bridge cross
	cd node/bridge && TMPDIR=/dev/shm $(GO) test -tags bridge -run '^$$' -bench . -benchtime 200x -count 1 ./...
	cd node/bridge && $(GO) run ./cmd/bridgebench -bin ../../build/bin/qpq-bridge_linux_amd64 -qpq ../../build/bin/qpq_linux_amd64 -idle 20s -linked 20s

# Static binaries for every router architecture (cross/targets.txt) in
# build/bin/qpq_linux_<goarch>.
cross:
	cross/build.sh $(IPK_VERSION)

# One .ipk per OpenWrt architecture name in build/ipk/qpq_<version>_<arch>.ipk,
# reproducibly.
ipk: cross
	$(GO) run ./cross/cmd/mkipk -version $(IPK_VERSION) -all -out build/ipk -epoch $(SOURCE_DATE_EPOCH)

# One .apk (apk v3, OpenWrt 25.12) per OpenWrt architecture in
# build/apk/<arch>/qpq-<version>.apk, made by the real `apk mkpkg` from owtools.
.PHONY: apk
apk: cross owtools
	$(GO) run ./cross/cmd/mkapk -version $(APK_VERSION) -all -out build/apk -apk $(QPQ_OWTOOLS)/bin/apk -epoch $(SOURCE_DATE_EPOCH)

# A signed feed in build/feed/ (README, "Add the qpq feed"): per arch an opkg
# index (Packages, Packages.gz, usign Packages.sig) and build/feed/apk/<arch>/
# with a signed packages.adb. The keys stay outside the repository:
#   usign -G -s ~/qpq-feed.sec -p ~/qpq-feed.pub -c "qpq feed"
#   openssl genrsa -out ~/qpq-apk.rsa 2048
#   make feed FEED_KEY=~/qpq-feed.sec FEED_APK_KEY=~/qpq-apk.rsa
.PHONY: feed
feed: ipk apk
	@if [ -z "$(FEED_KEY)" ] || [ -z "$(FEED_APK_KEY)" ]; then \
		echo 'make feed needs FEED_KEY (usign secret key) and FEED_APK_KEY (apk PEM private key), kept outside the repository:'; \
		echo '  usign -G -s ~/qpq-feed.sec -p ~/qpq-feed.pub -c "qpq feed"'; \
		echo '  openssl genrsa -out ~/qpq-apk.rsa 2048'; \
		echo '  make feed FEED_KEY=~/qpq-feed.sec FEED_APK_KEY=~/qpq-apk.rsa'; \
		exit 1; fi
	rm -rf build/feed
	$(GO) run ./cross/cmd/mkfeed -ipk build/ipk -apk build/apk -out build/feed \
		-usign-key $(FEED_KEY) -apk-key $(FEED_APK_KEY) -tools $(QPQ_OWTOOLS)

# Raw, gzip and xz sizes and the .ipk sizes against cross/budgets.txt (and
# the .apk sizes against the same budget, when make apk has run).
size: ipk
	$(GO) run ./cross/cmd/size -version $(IPK_VERSION) -apk build/apk -apk-version $(APK_VERSION)

# Tags the release the feed recipe builds: an annotated tag v$(VERSION) on
# HEAD, which openwrt/Makefile's PKG_SOURCE_VERSION names (README, "Making a
# release"). Refuses a tree with changes not committed, and a VERSION or
# RELEASE that openwrt/Makefile does not say. A later package revision
# (RELEASE 2) of the same source needs no new tag. Push it with
# `git push origin v$(VERSION)`.
.PHONY: release
release:
	@set -e; \
	mk_version=$$(sed -n 's/^PKG_VERSION:=//p' openwrt/Makefile); \
	mk_release=$$(sed -n 's/^PKG_RELEASE:=//p' openwrt/Makefile); \
	if [ "$$mk_version" != '$(VERSION)' ] || [ "$$mk_release" != '$(RELEASE)' ]; then \
		echo "make release: openwrt/Makefile says $$mk_version-$$mk_release, this Makefile $(VERSION)-$(RELEASE): make them agree first"; exit 1; fi; \
	if [ -n "$$(git status --porcelain)" ]; then \
		echo "make release: the work tree has changes not committed; commit them first"; exit 1; fi; \
	if git rev-parse -q --verify 'refs/tags/v$(VERSION)' >/dev/null; then \
		if [ "$$(git rev-parse 'v$(VERSION)^{commit}')" = "$$(git rev-parse HEAD)" ]; then \
			echo "v$(VERSION) already tags HEAD"; exit 0; fi; \
		echo "make release: v$(VERSION) exists on another commit: raise VERSION (a package-only change raises RELEASE and needs no tag)"; exit 1; fi; \
	git tag -a 'v$(VERSION)' -m 'qpq $(VERSION)'; \
	echo "tagged v$(VERSION); push it: git push origin v$(VERSION)"

# OpenWrt's own opkg, uci, jshn, usign, apk and shell library, built from the
# sources in ../shared/openwrt-tools (beside the clone, as in CI; about a
# minute, once: build.sh keeps an existing build). The cross/ tests that
# install the .ipk and run the init script find them through QPQ_OWTOOLS;
# `make test` builds them and the .ipk files before `unit` runs (order-only:
# each is made once, even under -j, and a bare `make unit` stays quick).
OWTOOLS_SRC ?= $(CURDIR)/../shared/openwrt-tools
export QPQ_OWTOOLS ?= $(CURDIR)/build/openwrt-tools

.PHONY: owtools
owtools:
	$(OWTOOLS_SRC)/build.sh $(QPQ_OWTOOLS)

ifeq ($(QPQ_PACKAGE_TESTS),1)
unit: | owtools ipk
unit: | apk
endif

# `qpq version` and `qpq selftest` of each foreign binary under qemu-user.
smoke: cross
	cross/smoke.sh

# The tools the tests need (capnp, qemu-*-static, busybox, shellcheck, xz,
# ip, avahi, dbus): installs the missing ones as root, else says what to run.
# .ci/run calls the same script.
deps:
	.ci/deps

clean:
	rm -rf qpq build
