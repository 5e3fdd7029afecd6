package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"time"
)

// Scenario names, in the order they run within a cell.
const (
	ScenarioNATS      = "nats"      // raw NATS request-reply
	ScenarioBus       = "bus"       // bus.Client + bus.Serve over NATS
	ScenarioGoMTLS    = "go-mtls"   // Go mTLS HTTP/2 client to a Go echo server
	ScenarioNginx     = "nginx"     // nginx mTLS HTTP/2 → HTTP/1.1 Go echo
	ScenarioIngress   = "ingress"   // mTLS HTTP/2 → ingress B → NATS → component
	ScenarioFederated = "federated" // component A → … → component B and back
	// ScenarioDomains is the memory mode (RunDomains), not a throughput
	// scenario.
	ScenarioDomains = "domains"
	// ScenarioProcs is the separate-process mode (RunProcs).
	ScenarioProcs = "procs"
)

// AllScenarios are the throughput scenarios in their running order.
var AllScenarios = []string{ScenarioNATS, ScenarioBus, ScenarioGoMTLS, ScenarioNginx, ScenarioIngress, ScenarioFederated}

// Matrix names for Config.Matrix.
const (
	// MatrixKey runs every in-flight count with the first body size and
	// KeyInFlight in flight with the other sizes.
	MatrixKey = "key"
	// MatrixFull runs every body size with every in-flight count.
	MatrixFull = "full"
)

// KeyInFlight is the in-flight count of the key cells (the targets are
// judged at KeyInFlight × the first body size).
const KeyInFlight = 64

// cellGrace bounds how long a cell waits, after its window, for the
// requests still in flight before their context is cancelled.
const cellGrace = 15 * time.Second

// respSlack is the extra room of a worker's response buffer.
const respSlack = 4096

// Config is a throughput run.
type Config struct {
	Scenarios []string      // subset of AllScenarios, run in AllScenarios order
	Sizes     []int         // request body sizes in bytes (>= 2)
	InFlight  []int         // concurrent requests
	Matrix    string        // MatrixKey or MatrixFull
	Duration  time.Duration // measuring window of one cell in one round
	Rounds    int           // rounds over the scenarios per cell (>= 1)
	Warmup    time.Duration // unmeasured traffic before each window
	NginxPath string        // nginx binary; empty: look it up in PATH and /usr/sbin
	// ServiceLog selects the fedbus services' logger: "none" (discarded
	// before formatting) or "json" (formatted as in production, written to
	// io.Discard).
	ServiceLog string
	CPUProfile string // write a CPU profile of the measured cells here
	MemProfile string // write an allocation profile here at the end
	JSONPath   string // write the results as JSON here
	Out        io.Writer
	Logger     *slog.Logger // fedbench's progress messages
}

// Cell is one point of the matrix.
type Cell struct {
	Body     int `json:"body_bytes"`
	InFlight int `json:"in_flight"`
}

func (c Cell) String() string { return fmt.Sprintf("%s × %d", sizeName(c.Body), c.InFlight) }

// Result is the measurement of one scenario in one cell.
type Result struct {
	Scenario string `json:"scenario"`
	Cell
	Skipped        string        `json:"skipped,omitempty"`
	Requests       int           `json:"requests"`
	Errors         int           `json:"errors"`
	FirstError     string        `json:"first_error,omitempty"`
	Window         time.Duration `json:"window_ns"`
	RPS            float64       `json:"requests_per_second"`
	P50            time.Duration `json:"p50_ns"`
	P90            time.Duration `json:"p90_ns"`
	P99            time.Duration `json:"p99_ns"`
	AllocsPerReq   float64       `json:"allocs_per_request"`
	BytesPerReq    float64       `json:"alloc_bytes_per_request"`
	SyscallsPerReq float64       `json:"syscalls_per_request"`        // read+write system calls of this process
	CPUPerReq      time.Duration `json:"cpu_per_request_ns"`          // this process
	ExtCPUPerReq   time.Duration `json:"external_cpu_per_request_ns"` // nginx processes
}

// Cells returns the matrix of cfg.
func (cfg *Config) Cells() []Cell {
	var out []Cell
	for i, size := range cfg.Sizes {
		for _, n := range cfg.InFlight {
			if cfg.Matrix == MatrixFull || i == 0 || n == KeyInFlight {
				out = append(out, Cell{Body: size, InFlight: n})
			}
		}
	}
	return out
}

// Validate checks the run's parameters.
func (cfg *Config) Validate() error {
	var errs []error
	if len(cfg.Scenarios) == 0 {
		errs = append(errs, errors.New("no scenario selected"))
	}
	for _, s := range cfg.Scenarios {
		if !slices.Contains(AllScenarios, s) {
			errs = append(errs, fmt.Errorf("unknown scenario %q (want %s or %s alone)", s, strings.Join(AllScenarios, ","), ScenarioDomains))
		}
	}
	if len(cfg.Sizes) == 0 || len(cfg.InFlight) == 0 {
		errs = append(errs, errors.New("sizes and in-flight counts must not be empty"))
	}
	for _, s := range cfg.Sizes {
		if s < 2 || s > 8<<20 {
			errs = append(errs, fmt.Errorf("body size %d is not 2 B to 8 MiB", s))
		}
	}
	for _, n := range cfg.InFlight {
		if n < 1 || n > 4096 {
			errs = append(errs, fmt.Errorf("in-flight count %d is not 1 to 4096", n))
		}
	}
	if cfg.Matrix != MatrixKey && cfg.Matrix != MatrixFull {
		errs = append(errs, fmt.Errorf("matrix %q is not %s or %s", cfg.Matrix, MatrixKey, MatrixFull))
	}
	if cfg.Rounds < 1 || cfg.Rounds > 100 {
		errs = append(errs, fmt.Errorf("rounds %d is not 1 to 100", cfg.Rounds))
	}
	if cfg.Duration <= 0 || cfg.Warmup < 0 {
		errs = append(errs, errors.New("duration must be positive and warmup not negative"))
	}
	if cfg.ServiceLog != "none" && cfg.ServiceLog != "json" {
		errs = append(errs, fmt.Errorf("service log %q is not none or json", cfg.ServiceLog))
	}
	return errors.Join(errs...)
}

// scenario is one way of making an echo request.
type scenario struct {
	name string
	// do sends body and checks that the answer is body; buf is the
	// worker's scratch buffer, at least len(body)+respSlack bytes.
	do func(ctx context.Context, body, buf []byte) error
	// extCPU, when set, returns the CPU time of the scenario's external
	// processes.
	extCPU func() (time.Duration, error)
	// skip, when set, is why the scenario does not run.
	skip string
	// mark, when set, is told when the measuring window starts ("T0")
	// and ends ("T1"), once the counters are sampled.
	mark func(edge string)
}

// Run sets up the selected scenarios, measures every cell and prints the
// table, the ratios and the targets to cfg.Out.
func Run(ctx context.Context, cfg Config) (results []Result, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	svcLog := slog.New(slog.DiscardHandler)
	if cfg.ServiceLog == "json" {
		svcLog = slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	w, err := newWorld(ctx, svcLog)
	if err != nil {
		return nil, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if cerr := w.close(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("tear down: %w", cerr))
		}
	}()
	nginxVersion := ""
	var scenarios []*scenario
	for _, name := range AllScenarios {
		if !slices.Contains(cfg.Scenarios, name) {
			continue
		}
		var sc *scenario
		switch name {
		case ScenarioNATS:
			sc, err = w.natsScenario()
		case ScenarioBus:
			sc, err = w.busScenario(ctx)
		case ScenarioGoMTLS:
			sc, err = w.goMTLSScenario()
		case ScenarioNginx:
			sc, nginxVersion, err = w.nginxScenario(ctx, cfg.NginxPath)
		case ScenarioIngress:
			sc, err = w.ingressScenario()
		case ScenarioFederated:
			sc, err = w.federatedScenario()
		}
		if err != nil {
			return nil, fmt.Errorf("set up %s: %w", name, err)
		}
		if sc.skip != "" {
			log.Warn("scenario skipped", "scenario", name, "reason", sc.skip)
		}
		scenarios = append(scenarios, sc)
	}
	printHeader(cfg.Out, cfg, nginxVersion)

	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	// Rounds interleave: every scenario of a cell runs once per round, so
	// that a disturbance of the machine hits them alike.
	cells := cfg.Cells()
	for _, cell := range cells {
		acc := make([]window, len(scenarios))
		for round := range cfg.Rounds {
			for i, sc := range scenarios {
				if sc.skip != "" {
					continue
				}
				log.Info("measuring", "scenario", sc.name, "body", cell.Body, "in_flight", cell.InFlight, "round", round+1)
				w, err := measure(ctx, sc, cell, cfg.Warmup, cfg.Duration)
				if err != nil {
					return results, fmt.Errorf("%s %s: %w", sc.name, cell, err)
				}
				log.Info("measured", "scenario", sc.name, "requests", len(w.lat), "errors", w.errs)
				acc[i].add(w)
			}
		}
		for i, sc := range scenarios {
			if sc.skip != "" {
				results = append(results, Result{Scenario: sc.name, Cell: cell, Skipped: sc.skip})
				continue
			}
			results = append(results, acc[i].result(sc.name, cell))
		}
	}
	if cfg.MemProfile != "" {
		if err := writeAllocProfile(cfg.MemProfile); err != nil {
			return results, err
		}
	}
	printTable(cfg.Out, results)
	printRatios(cfg.Out, results, cells)
	printTargets(cfg.Out, results, Cell{Body: cfg.Sizes[0], InFlight: KeyInFlight})
	if cfg.JSONPath != "" {
		data, err := json.MarshalIndent(results, "", "  ")
		if err != nil {
			return results, fmt.Errorf("encode results: %w", err)
		}
		if err := os.WriteFile(cfg.JSONPath, data, 0o644); err != nil {
			return results, fmt.Errorf("write results: %w", err)
		}
	}
	return results, nil
}

func writeAllocProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("alloc profile: %w", err)
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		return fmt.Errorf("alloc profile: %w", err)
	}
	return nil
}

// workerStats is what one load-generating goroutine measured.
type workerStats struct {
	lat      []time.Duration
	errs     int
	firstErr error
}

// window is what one measuring window of one scenario in one cell
// measured; the windows of the rounds are added up.
type window struct {
	lat      []time.Duration
	errs     int
	firstErr string
	elapsed  time.Duration
	mallocs  uint64
	bytes    uint64
	cpu      time.Duration
	extCPU   time.Duration
	syscalls uint64
}

// add accumulates o into w.
func (w *window) add(o window) {
	w.lat = append(w.lat, o.lat...)
	w.errs += o.errs
	if w.firstErr == "" {
		w.firstErr = o.firstErr
	}
	w.elapsed += o.elapsed
	w.mallocs += o.mallocs
	w.bytes += o.bytes
	w.cpu += o.cpu
	w.extCPU += o.extCPU
	w.syscalls += o.syscalls
}

// result summarises the accumulated windows.
func (w *window) result(name string, cell Cell) Result {
	r := Result{Scenario: name, Cell: cell, Window: w.elapsed, Errors: w.errs, FirstError: w.firstErr, Requests: len(w.lat)}
	r.P50, r.P90, r.P99 = latencySummary(w.lat)
	if done := r.Requests + r.Errors; done > 0 && w.elapsed > 0 {
		r.RPS = float64(r.Requests) / w.elapsed.Seconds()
		r.AllocsPerReq = float64(w.mallocs) / float64(done)
		r.BytesPerReq = float64(w.bytes) / float64(done)
		r.SyscallsPerReq = float64(w.syscalls) / float64(done)
		r.CPUPerReq = w.cpu / time.Duration(done)
		r.ExtCPUPerReq = w.extCPU / time.Duration(done)
	}
	return r
}

// measure keeps cell.InFlight requests in flight for warmup+length and
// measures the requests that complete within the window: each worker
// issues its next request as soon as its previous one completes.
func measure(ctx context.Context, sc *scenario, cell Cell, warmup, length time.Duration) (window, error) {
	body := makeBody(cell.Body)
	runtime.GC() // the previous cell's garbage is not this cell's cost
	cctx, cancel := context.WithTimeout(ctx, warmup+length+cellGrace)
	defer cancel()
	t0 := time.Now().Add(warmup)
	t1 := t0.Add(length)
	stats := make([]workerStats, cell.InFlight)
	var wg sync.WaitGroup
	for i := range stats {
		wg.Go(func() {
			st := &stats[i]
			buf := make([]byte, len(body)+respSlack)
			st.lat = make([]time.Duration, 0, 4096)
			for cctx.Err() == nil {
				start := time.Now()
				if !start.Before(t1) {
					return
				}
				err := sc.do(cctx, body, buf)
				end := time.Now()
				if end.Before(t0) || end.After(t1) {
					continue
				}
				if err != nil {
					st.errs++
					if st.firstErr == nil {
						st.firstErr = err
					}
					continue
				}
				st.lat = append(st.lat, end.Sub(start))
			}
		})
	}
	s0, err0 := sleepAndSample(cctx, t0, sc.extCPU)
	if sc.mark != nil {
		sc.mark("T0")
	}
	s1, err1 := sleepAndSample(cctx, t1, sc.extCPU)
	if sc.mark != nil {
		sc.mark("T1")
	}
	wg.Wait()
	if err := errors.Join(err0, err1); err != nil {
		return window{}, err
	}
	if err := ctx.Err(); err != nil {
		return window{}, err
	}
	w := window{
		elapsed:  s1.at.Sub(s0.at),
		mallocs:  s1.mallocs - s0.mallocs,
		bytes:    s1.bytes - s0.bytes,
		cpu:      s1.cpu - s0.cpu,
		extCPU:   s1.childCPU - s0.childCPU,
		syscalls: s1.syscalls - s0.syscalls,
	}
	for i := range stats {
		w.lat = append(w.lat, stats[i].lat...)
		w.errs += stats[i].errs
		if w.firstErr == "" && stats[i].firstErr != nil {
			w.firstErr = stats[i].firstErr.Error()
		}
	}
	return w, nil
}

// sleepAndSample waits until t and samples the counters.
func sleepAndSample(ctx context.Context, t time.Time, extCPU func() (time.Duration, error)) (sample, error) {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return sample{}, fmt.Errorf("cell interrupted: %w", ctx.Err())
	case <-timer.C:
	}
	return takeSample(extCPU)
}

// makeBody returns a JSON string of exactly n bytes (n >= 2).
func makeBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	b[0], b[n-1] = '"', '"'
	return b
}

// sizeName formats a body size: 256 B, 64 KiB.
func sizeName(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	default:
		return fmt.Sprintf("%d B", n)
	}
}
