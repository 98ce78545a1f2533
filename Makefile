# qpq: build, run, test. `make run` and `make test` are the two commands a
# fresh Debian machine needs (after .ci/run's installs, or `make deps`).

VERSION ?= 0.1.0
GO      ?= go
PKG     := github.com/quicproquo/qpq
LDFLAGS := -s -w -X $(PKG)/node/buildinfo.Version=$(VERSION)
export CGO_ENABLED = 0

# Fuzz targets run for FUZZTIME each by `make test` (package:Func).
FUZZTIME ?= 3s
FUZZ := \
	./schemas:FuzzDecodeMessages \
	./gossip:FuzzDecodeEnvelope \
	./mesh/identity:FuzzParseFingerprint \
	./mesh/link:FuzzParsePeerAddr \
	./node/config:FuzzParseValues \
	./node/uci:FuzzParse

.PHONY: all build run test unit fuzz lint check-generated generate bench deps clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o qpq ./node/cmd/qpq

# A node on loopback with its data under ./.qpq (mDNS stays off: DESIGN,
# "Running nodes on this machine"). Ctrl-C stops it cleanly.
run: build
	./qpq node --data ./.qpq --listen 127.0.0.1:7443

test: lint check-generated unit fuzz

unit:
	$(GO) test -count=1 -timeout 15m ./...

fuzz:
	@set -e; for t in $(FUZZ); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 1s $$pkg; \
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

# Link setup and RPC round trip beside a bare quic-go stream, as ratios.
bench:
	@mkdir -p build
	$(GO) test -run '^$$' -bench . -benchtime 2s -count 1 ./mesh/link > build/bench.txt || { cat build/bench.txt; exit 1; }
	@awk -f cross/benchratio.awk build/bench.txt

# Debian packages the tests need (the same list .ci/run installs).
deps:
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq capnproto

clean:
	rm -rf qpq build
