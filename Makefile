# microengine — `make run` shows the engine working end to end; `make test`
# runs every test. Both install what they need (clamd) when it is missing.

GO        ?= go
BIN       := bin
VERSION   ?= 0.1.0
# PLUGIN_VERSION, when set, stamps the plugin binaries (e.g. to try a hot swap).
PLUGIN_VERSION ?=
# Pinned code generators for `make proto` (protoc itself is Debian's).
PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
TOOLS     := $(CURDIR)/build/tools

.PHONY: all build deps test unit e2e run proto lint clean bench conformance fuzz

all: build

# Every folder under plugins/ with a main.go is a plugin: make build builds
# it as bin/microengine-plugin-NAME, no list to keep.
PLUGINS := $(patsubst plugins/%/main.go,%,$(wildcard plugins/*/main.go))
MODULE  := github.com/microengine/microengine
# A plugin's version lives in main.version or in its scanner package's
# Version (clamav, yara); PLUGIN_VERSION sets whichever it has (the linker
# ignores the other). Without it plugins keep their own.
plugin_ldflags = $(if $(PLUGIN_VERSION),-ldflags "-X main.version=$(PLUGIN_VERSION) -X $(MODULE)/plugins/$(1)/scanner.Version=$(PLUGIN_VERSION)")

define build_plugin
	$(GO) build $(call plugin_ldflags,$(1)) -o $(BIN)/microengine-plugin-$(1) ./plugins/$(1)

endef

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN)/microengine ./host/cmd/microengine
	$(foreach p,$(PLUGINS),$(call build_plugin,$(p)))

deps:
	@scripts/ensure-clamd.sh
	@scripts/ensure-yara.sh

# Every test: unit and integration tests (real plugins, a private clamd the
# tests start themselves), then the slower end-to-end tests.
test: deps build lint unit e2e

unit:
	$(GO) test -count=1 ./...

e2e:
	$(GO) test -count=1 -tags e2e -timeout 15m ./test/e2e/...
	$(GO) test -count=1 -tags e2e -timeout 10m -run 'PartialScanAll|SkipsSilentlyAll|DefaultLimits' ./plugins/clamav/scanner/

# Starts the engine (its clamav plugin runs its own clamd) and the
# marketplace simulator on a sample set, and prints the scoreboard.
run: deps build
	@scripts/run.sh

conformance: deps build
	$(GO) test -count=1 -run 'Conformance' ./shared/conformance/... ./plugins/...
	bin/microengine conformance -strict bin/microengine-plugin-eicar
	bin/microengine conformance -strict -config engine.hcl -plugin yara

# Benchmarks (not part of `make test`): clamav streaming against a bare
# clamd client (4 rounds, so each way goes first once), the yara plugin
# against Debian's yara command on the same rules (cold, 3 rounds) and its
# peak resident set on 512 MiB, the marketplace
# machinery, then the real engine under the
# simulator at 200 bounties/s for 30 s, the 10-minute memory soak, the
# engine's peak resident set under 1,000 forged 1 MiB webhooks, and 3
# engines on a 3-node NATS cluster at 200 bounties/s for 60 s with one
# engine and the stream leader killed mid-run.
bench: deps build
	$(GO) test -run '^$$' -bench Instream -benchtime 4x -timeout 30m ./plugins/clamav/
	$(GO) test -run '^$$' -bench AgainstClamdscan -benchtime 3x -timeout 30m ./plugins/clamav/
	$(GO) test -run '^$$' -bench YaraAgainstCLI -benchtime 3x -timeout 30m ./plugins/yara/
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./host/marketplace/...
	$(GO) test -tags e2e -run '^$$' -bench 'EngineLoad|EngineSoak|UnsignedFlood|ClusterLoad' -benchtime 1x -timeout 30m ./test/e2e/

# The clamd reply parser and the bounty parser under the fuzzer (30 s
# each; not part of make test).
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseReply -fuzztime 30s ./plugins/clamav/clamd
	$(GO) test -run '^$$' -fuzz FuzzParseBounty -fuzztime 30s ./host/marketplace

# gofmt, go vet, go.mod/go.sum as `go mod tidy` leaves them (the diff is
# printed when they are not), and the layering rules between packages.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; }
	@GO=$(GO) scripts/check-layers.sh
	@scripts/check-units.sh
	@# The SDK and host keep building off Linux (they stream there); yara
	@# needs cgo, which a cross build has not.
	@GOOS=darwin $(GO) build $$($(GO) list ./... | grep -v /plugins/yara) || { echo "the build for darwin broke: see the _other.go files"; exit 1; }

proto:
	@command -v protoc >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq protobuf-compiler; } || \
		{ echo "protoc is missing: sudo apt-get install -y protobuf-compiler"; exit 1; }
	GOBIN=$(TOOLS) GOFLAGS= $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(TOOLS) GOFLAGS= $(GO) install $(PROTOC_GEN_GO_GRPC)
	PATH=$(TOOLS):$$PATH protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative shared/proto/scanner.proto

clean:
	rm -rf $(BIN) build
