# fedbus — see README.md. Everything needs only Go (and, for `integration`,
# a Docker engine: scripts/docker-engine.sh starts one).
GO       ?= go
PKGS     := ./...
FUZZTIME ?= 5s
BIN      := bin

# Fuzz targets run by `make fuzz` (package:target).
FUZZ_TARGETS := \
	./bus:FuzzParseOut \
	./bus:FuzzDecode \
	./bus:FuzzNormalizeDomain \
	./ingress:FuzzParsePath \
	./ingress:FuzzIngressRequest

.PHONY: all build test unit vet fuzz demo demo-serve clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/...

## test: vet, unit and end-to-end tests with the race detector, then each fuzz target for $(FUZZTIME)
test: vet unit fuzz

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet $(PKGS)

unit:
	$(GO) test -race -count=1 -timeout 10m $(PKGS)

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done

## demo: two backends in one process, the seed's exact handle search, then exit
demo:
	$(GO) run ./cmd/demo

demo-serve:
	$(GO) run ./cmd/demo -serve

clean:
	rm -rf $(BIN)
