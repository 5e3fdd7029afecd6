// Command fedbench is fedbus's load generator (see package bench): it
// compares the federated round trip and the ingress with raw NATS, a raw
// Go mutual-TLS HTTP/2 server and nginx, all in one run, and prints a
// table, the throughput ratios and the targets of issue 6. With
// -scenario=domains it measures the memory of a federator that has called
// 10,000 remote domains; with -scenario=asset the download of a large
// asset through the object stores against a raw HTTPS download.
//
//	go run ./cmd/fedbench                         # key cells, all scenarios
//	go run ./cmd/fedbench -matrix=full -duration=5s
//	go run ./cmd/fedbench -scenario=federated -inflight=64 -sizes=256 -cpuprofile=fed.pprof
//	go run ./cmd/fedbench -scenario=domains
//	go run ./cmd/fedbench -scenario=asset -asset-size=52428800 -rounds=5
//	bin/fedbench -scenario=procs -bin bin -workers 1,2,4   # every part its own process (make bench builds bin/)
//	go run ./cmd/fedbench -scenario=notifications -batches=10,50,100,200,500,1000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fedbus/fedbus/bench"
	"github.com/fedbus/fedbus/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet("fedbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		scenarios  = fs.String("scenario", strings.Join(bench.AllScenarios, ","), "comma-separated scenarios ("+strings.Join(bench.AllScenarios, ", ")+"), or "+bench.ScenarioDomains+" alone for the memory mode, or "+bench.ScenarioAsset+" alone for the asset mode, or "+bench.ScenarioProcs+" alone for the separate-process mode, or "+bench.ScenarioNotifications+" alone for the notification benchmark")
		sizes      = fs.String("sizes", "256,65536", "comma-separated request body sizes in bytes")
		inflight   = fs.String("inflight", "1,16,64,256", "comma-separated numbers of requests kept in flight")
		matrix     = fs.String("matrix", bench.MatrixKey, "key: every in-flight count with the first size, and 64 in flight with the other sizes; full: every size with every count")
		duration   = fs.Duration("duration", 3*time.Second, "measuring window of each cell")
		rounds     = fs.Int("rounds", 1, "rounds per cell: the scenarios of a cell run in turn, rounds times, and the windows are added up")
		warmup     = fs.Duration("warmup", 500*time.Millisecond, "unmeasured traffic before each window")
		nginx      = fs.String("nginx", "", "nginx binary (default: nginx in PATH or /usr/sbin/nginx)")
		serviceLog = fs.String("service-log", "none", "fedbus services' logs: none (discarded) or json (formatted as in production, written to io.Discard)")
		cpuprofile = fs.String("cpuprofile", "", "write a CPU profile of the measured cells to this file")
		memprofile = fs.String("memprofile", "", "write an allocation profile to this file at the end (domains mode: heap profiles of the federator process to FILE.after and FILE.idle)")
		jsonPath   = fs.String("json", "", "write the results as JSON to this file")
		verbose    = fs.Bool("v", false, "print progress to stderr")
		domains    = fs.Int("domains", 10000, "domains mode: number of distinct remote domains")
		idle       = fs.Duration("idle", 3*time.Second, "domains mode: the federator's idle connection timeout (FED_IDLE_CONN_TIMEOUT)")
		settle     = fs.Duration("settle", 0, "domains mode: one more snapshot this long after the idle one (x/net/http2 frees a closed connection when its 30s health-check timer fires)")
		memlimit   = fs.String("gomemlimit", "", "domains mode: GOMEMLIMIT of the federator process, e.g. 80MiB (default: not set)")
		child      = fs.String("domains-child", "", "internal: run as the federator process of the domains mode with this JSON configuration")
		assetSize  = fs.Int64("asset-size", 50<<20, "asset mode: bytes of the asset")
		binDir     = fs.String("bin", "", "asset and procs modes: directory with the federator, ingress and nats-server binaries (asset mode default: built with go build; procs mode default: bin)")
		procChild  = fs.String("proc", "", "internal: run as a child process of the procs mode with this JSON configuration")
		workers    = fs.String("workers", "1,2,4", "procs mode: numbers of federator (and ingress) processes")
		procsEnv   = fs.String("procs-env", "", "procs mode: variants of the federators' and ingresses' environment, separated by |, each space-separated VAR=value (e.g. '|GOMAXPROCS=2': fedbus's defaults and GOMAXPROCS=2); bin=DIR takes their binaries from DIR")
		infraEnv   = fs.String("procs-infra-env", "", "procs mode: space-separated VAR=value added to the environment of nats-server, the echo component and the load clients")
		procsProf  = fs.String("procs-profile", "", "procs mode: directory for CPU profiles of a federator and an ingress process (first window)")
		backlog    = fs.Int("backlog", 10000, "notifications mode: the backlog drained to one destination")
		baseline   = fs.Int("baseline-backlog", 0, "notifications mode: the backlog of the one-per-request runs (default -backlog)")
		rtt        = fs.Duration("rtt", 20*time.Millisecond, "notifications mode: round-trip time added by the delaying proxy")
		batches    = fs.String("batches", "100", "notifications mode: comma-separated FED_NOTIFY_BATCH values of the batching runs")
		dests      = fs.Int("destinations", 100, "notifications mode: destinations of the throughput run")
		thru       = fs.Int("throughput", 20000, "notifications mode: notifications of the throughput run")
		samples    = fs.Int("latency-samples", 300, "notifications mode: notifications of the latency run")
		body       = fs.Int("body", 256, "notifications mode: bytes of each notification's body")
		waitingN   = fs.Int("waiting", 10000, "notifications mode: unreachable destinations of the resources run (0: none)")
	)
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, version.Line("fedbench"))
		return 0
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if *procChild != "" {
		if err := bench.ProcChild(ctx, *procChild, os.Stdin, stdout); err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintln(stderr, "fedbench child:", err)
			return 1
		}
		return 0
	}
	if *child != "" {
		if err := bench.DomainsChild(ctx, *child, stdout); err != nil {
			fmt.Fprintln(stderr, "fedbench domains child:", err)
			return 1
		}
		return 0
	}
	names := splitList(*scenarios)
	if len(names) == 1 && names[0] == bench.ScenarioAsset {
		cfg := bench.AssetConfig{Size: *assetSize, Rounds: *rounds, Concurrent: 8, Out: stdout, Logger: log}
		if n, err := parseInts(*inflight); err == nil && len(n) == 1 {
			cfg.Concurrent = n[0]
		}
		if *binDir != "" {
			cfg.Bin = bench.BinariesIn(*binDir)
		}
		if err := bench.RunAsset(ctx, cfg); err != nil {
			fmt.Fprintln(stderr, "fedbench:", err)
			return 1
		}
		return 0
	}
	if len(names) == 1 && names[0] == bench.ScenarioNotifications {
		sizes, err := parseInts(*batches)
		if err != nil {
			fmt.Fprintln(stderr, "fedbench:", err)
			return 2
		}
		cfg := bench.NotifyConfig{Backlog: *backlog, BaselineBacklog: *baseline, RTT: *rtt, BatchSizes: sizes, Destinations: *dests,
			Throughput: *thru, LatencySamples: *samples, Waiting: *waitingN, BodySize: *body, Out: stdout, Logger: log}
		if err := bench.RunNotify(ctx, cfg); err != nil {
			fmt.Fprintln(stderr, "fedbench:", err)
			return 1
		}
		return 0
	}
	if len(names) == 1 && names[0] == bench.ScenarioDomains {
		cfg := bench.DomainsConfig{Domains: *domains, InFlight: 64, IdleTimeout: *idle, HeapProfile: *memprofile, Settle: *settle, GoMemLimit: *memlimit, Out: stdout, Logger: log}
		if n, err := parseInts(*inflight); err == nil && len(n) == 1 {
			cfg.InFlight = n[0]
		}
		if err := bench.RunDomains(ctx, cfg); err != nil {
			fmt.Fprintln(stderr, "fedbench:", err)
			return 1
		}
		return 0
	}
	if len(names) == 1 && names[0] == bench.ScenarioProcs {
		w, err := parseInts(*workers)
		if err != nil {
			fmt.Fprintln(stderr, "fedbench:", err)
			return 2
		}
		dir := *binDir
		if dir == "" {
			dir = "bin"
		}
		cfg := bench.ProcsConfig{BinDir: dir, Workers: w, InFlight: bench.KeyInFlight, Body: 256, Duration: *duration, Warmup: *warmup,
			Rounds: *rounds, NginxPath: *nginx, Variants: strings.Split(*procsEnv, "|"), InfraEnv: strings.Fields(*infraEnv), ProfileDir: *procsProf, Out: stdout, Logger: log}
		if n, err := parseInts(*inflight); err == nil && len(n) == 1 {
			cfg.InFlight = n[0]
		}
		if n, err := parseInts(*sizes); err == nil && len(n) == 1 {
			cfg.Body = n[0]
		}
		if err := bench.RunProcs(ctx, cfg); err != nil {
			fmt.Fprintln(stderr, "fedbench:", err)
			return 1
		}
		return 0
	}
	sz, err1 := parseInts(*sizes)
	inf, err2 := parseInts(*inflight)
	if err := errors.Join(err1, err2); err != nil {
		fmt.Fprintln(stderr, "fedbench:", err)
		return 2
	}
	cfg := bench.Config{
		Scenarios: names, Sizes: sz, InFlight: inf, Matrix: *matrix,
		Duration: *duration, Rounds: *rounds, Warmup: *warmup, NginxPath: *nginx, ServiceLog: *serviceLog,
		CPUProfile: *cpuprofile, MemProfile: *memprofile, JSONPath: *jsonPath,
		Out: stdout, Logger: log,
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "fedbench:", err)
		return 2
	}
	if _, err := bench.Run(ctx, cfg); err != nil {
		fmt.Fprintln(stderr, "fedbench:", err)
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number: %w", f, err)
		}
		out = append(out, n)
	}
	return out, nil
}
