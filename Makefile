# fedbus — see README.md. Everything needs only Go (and, for `integration`,
# a Docker engine: scripts/docker-engine.sh starts one).
GO       ?= go
PKGS     := ./...
# The Helm chart's test (make chart) is a module of its own, in
# deploy/helm: it links Helm and the Kubernetes client libraries, which the
# fedbus module does not depend on.
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can
# report a spurious "context deadline exceeded" failure when the time is up
# (golang/go#75804, fixed in Go 1.27), and CI would fail without a crasher.
FUZZTIME ?= 20000x
BIN      := bin
# The version the binaries report (-version, the start-up line) and the
# image's labels: git describe of the working tree, "dev" outside git.
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X github.com/fedbus/fedbus/internal/version.Version=$(VERSION)

# Fuzz targets run by `make fuzz` (package:target).
FUZZ_TARGETS := \
	./contract:FuzzParseOut \
	./bus:FuzzDecode \
	./contract:FuzzNormalizeDomain \
	./contract:FuzzParsePath \
	./ingress:FuzzIngressRequest \
	./policy:FuzzParseEntry \
	./federator:FuzzParseRetryAfter \
	./tracing:FuzzParseTraceParent \
	./ingress:FuzzNotificationBatch

.PHONY: all build test unit vet fuzz demo demo-serve clean chart

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='$(LDFLAGS)' -o $(BIN)/ ./cmd/...

## test: vet, unit and end-to-end tests with the race detector, the Helm chart, then each fuzz target for $(FUZZTIME)
test: vet unit chart fuzz

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet $(PKGS)

unit:
	$(GO) test -race -count=1 -timeout 10m $(PKGS)

## chart: helm lint --strict and helm template of deploy/helm/fedbus with its documented values (Helm as a library)
chart:
	cd deploy/helm && $(GO) test -count=1 -timeout 20m ./...

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

## ---- containers: images, docker-compose and the integration suite ----
# They need a Docker engine: scripts/docker-engine.sh installs and starts one.
DOCKER        ?= docker
COMPOSE       ?= docker-compose
IMAGE         ?= fedbus:dev
NATS_DEV      ?= fedbus-nats:dev
CERTS_DIR     ?= $(BIN)/certs
IMAGE_CMDS    := federator ingress fedctl devdns standin fedcerts
STATIC        := CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w $(LDFLAGS)'
# The seed's exact handle search, sent by the stand-in brig of A.
REQUEST       ?= b.example.com brig get-user-by-handle '"alice"'

.PHONY: images certs compose-up compose-down compose-config compose-request integration \
	compose-cluster-up compose-cluster-down compose-cluster-request

## images: fedbus:dev (the six static binaries, with OCI labels) and fedbus-nats:dev, both FROM scratch
images:
	$(STATIC) -o $(BIN)/image/ $(addprefix ./cmd/,$(IMAGE_CMDS))
	$(STATIC) -o $(BIN)/nats/nats-server github.com/nats-io/nats-server/v2
	$(DOCKER) build -q -f Dockerfile --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t $(IMAGE) $(BIN)/image
	$(DOCKER) build -q -f scripts/nats.Dockerfile -t $(NATS_DEV) $(BIN)/nats

## certs: a throwaway CA and the certificates of a.example.com and b.example.com in $(CERTS_DIR)
certs:
	$(GO) run ./cmd/fedcerts -dir $(CERTS_DIR) -readable-keys

## compose-up: both backends in docker-compose (see docs/compose.md); waits until A reaches B
compose-up: images certs
	NATS_IMAGE=$(NATS_DEV) FEDBUS_IMAGE=$(IMAGE) $(COMPOSE) up -d
	$(COMPOSE) exec -T standin-a /standin call -retry-for 60s -timeout 5s $(REQUEST) >/dev/null
	@echo "compose: both backends are up; try: make compose-request"

compose-down:
	$(COMPOSE) down --remove-orphans --timeout 20

## compose-config: validate docker-compose.yml and docker-compose.cluster.yml (with their defaults)
compose-config:
	$(COMPOSE) config -q
	$(COMPOSE) -f docker-compose.cluster.yml config -q
	@echo "docker-compose.yml and docker-compose.cluster.yml are valid"

## compose-cluster-up: both backends on 3-server NATS clusters (docs/compose.md); waits until A reaches B
CLUSTER_COMPOSE := $(COMPOSE) -f docker-compose.cluster.yml
compose-cluster-up: images certs
	mkdir -p $(addprefix $(BIN)/nats-data/,a-1 a-2 a-3 b-1 b-2 b-3)
	chmod 0777 $(addprefix $(BIN)/nats-data/,a-1 a-2 a-3 b-1 b-2 b-3)
	NATS_IMAGE=$(NATS_DEV) FEDBUS_IMAGE=$(IMAGE) $(CLUSTER_COMPOSE) up -d
	$(CLUSTER_COMPOSE) exec -T standin-a /standin call -retry-for 90s -timeout 5s $(REQUEST) >/dev/null
	@echo "compose (clusters): both backends are up; try: make compose-cluster-request"

compose-cluster-down:
	$(CLUSTER_COMPOSE) down --remove-orphans --timeout 20

compose-cluster-request:
	$(CLUSTER_COMPOSE) exec -T standin-a /standin call $(REQUEST)

## compose-request: the seed's exact handle search for alice, from A to B, through the compose stack
compose-request:
	$(COMPOSE) exec -T standin-a /standin call $(REQUEST)

## integration: build the images, then the container fault tests (integration/, build tag integration)
integration: images
	FEDBUS_IMAGE=$(IMAGE) NATS_IMAGE=$(NATS_DEV) TESTCONTAINERS_RYUK_DISABLED=true $(GO) test -tags integration -count=1 -timeout 15m -v ./integration/

## bench: fedbench (see BENCHMARKS.md): every scenario at 64 in flight × 256 B plus a sweep
## (1, 16, 256 in flight; 64 KiB at 64); the key cell (64 × 256 B) again in 3 interleaved rounds,
## whose ratios are the targets' verdicts; the separate-process scaling table (two nats-server,
## 1, 2 and 4 federator and ingress processes, the echo component and the load client each a
## process, beside the in-process figure and nginx; fedbus's runtime defaults, then Go's); the
## 10,000-domain memory mode (Go's GC defaults; FED_IDLE_CONN_TIMEOUT 3s, then the default 90s);
## the asset mode (a 50 MiB stream-asset through both object stores against a raw HTTPS download,
## 5 interleaved rounds, then 8 at once for the memory per transfer, with the production binaries
## and nats-server as processes); notifications (the drain of 10,000 over 20 ms of added round
## trip: batches against one per request, whose rate is measured on 1,000; throughput to 100
## destinations; latency; 10,000 waiting destinations); the bus, federator and ingress
## micro-benchmarks. About 8 minutes. BENCH_FLAGS adds fedbench flags to the first run (e.g.
## -matrix=full).
BENCH_FLAGS ?=
.PHONY: bench
bench:
	$(GO) build -o $(BIN)/ ./cmd/fedbench ./cmd/federator ./cmd/ingress github.com/nats-io/nats-server/v2
	$(BIN)/fedbench -duration=3s -warmup=500ms $(BENCH_FLAGS)
	$(BIN)/fedbench -inflight=64 -sizes=256 -duration=2s -rounds=3
	$(BIN)/fedbench -scenario=procs -bin=$(BIN) -workers=1,2,4 -duration=3s -warmup=500ms -rounds=2 -procs-env='|GOMAXPROCS=$(shell nproc) GOGC=100'
	$(BIN)/fedbench -scenario=domains -domains=10000 -idle=3s
	$(BIN)/fedbench -scenario=domains -domains=10000 -idle=90s
	$(BIN)/fedbench -scenario=asset -asset-size=52428800 -rounds=5 -inflight=8 -bin=$(BIN)
	$(BIN)/fedbench -scenario=notifications -backlog=10000 -baseline-backlog=1000 -batches=50,100,200,500,1000
	$(GO) test -run='^$$' -bench=. -benchtime=2000x ./bus ./federator ./policy ./discovery ./contract ./ingress
