package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/federator"
	"github.com/fedbus/fedbus/setup"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// Names of the domains mode: remote domain i is d<i>.bench.example, its SRV
// target d<i>.peers.bench.example (a distinct host, hence a distinct
// connection), all served by one ingress whose certificate has the SAN
// *.peers.bench.example.
const (
	domainFormat = "d%05d.bench.example"
	targetFormat = "d%05d.peers.bench.example"
	targetsSAN   = "*.peers.bench.example"
	// rssTargetMiB is the memory target of issue 6.
	rssTargetMiB = 100
)

// DomainsConfig is the memory mode.
type DomainsConfig struct {
	Domains     int           // distinct remote domains, each called once
	InFlight    int           // calls in flight
	IdleTimeout time.Duration // the federator's FED_IDLE_CONN_TIMEOUT
	// Settle, when positive, adds a last snapshot that long after the idle
	// one (x/net/http2 keeps a closed connection reachable until its
	// health-check timer fires, ReadIdleTimeout = 30s in the federator).
	Settle time.Duration
	// HeapProfile, when set, is where the federator process writes heap
	// profiles: <HeapProfile>.after once every domain was called,
	// <HeapProfile>.idle after the idle timeout, <HeapProfile>.settled
	// after Settle.
	HeapProfile string
	// GoMemLimit, when set, is the GOMEMLIMIT of the federator process
	// (Go's soft memory limit, e.g. "80MiB"): the garbage collector runs
	// more often as the heap nears it.
	GoMemLimit string
	Out        io.Writer
	Logger     *slog.Logger
}

// childConfig is what the parent passes to the federator process.
type childConfig struct {
	DNS         string        `json:"dns"`
	Cert        string        `json:"cert"`
	Key         string        `json:"key"`
	CA          string        `json:"ca"`
	Domains     int           `json:"domains"`
	InFlight    int           `json:"in_flight"`
	IdleTimeout time.Duration `json:"idle_timeout"`
	HeapProfile string        `json:"heap_profile,omitempty"`
	Settle      time.Duration `json:"settle"`
	GoMemLimit  string        `json:"gomemlimit,omitempty"`
}

// snapshot is the memory of a process at one moment.
type snapshot struct {
	RSSKiB     int64  `json:"rss_kib"`
	HWMKiB     int64  `json:"hwm_kib"`
	FDs        int    `json:"fds"`
	Goroutines int    `json:"goroutines"`
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	GoSys      uint64 `json:"go_sys"`
}

func takeSnapshot() (snapshot, error) {
	var s snapshot
	var err1, err2, err3 error
	s.RSSKiB, err1 = procStatus("VmRSS")
	s.HWMKiB, err2 = procStatus("VmHWM")
	s.FDs, err3 = openFDs()
	s.Goroutines = runtime.NumGoroutine()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.HeapInuse, s.StackInuse, s.GoSys = ms.HeapInuse, ms.StackInuse, ms.Sys
	return s, errors.Join(err1, err2, err3)
}

// childResult is the federator process's report.
type childResult struct {
	Calls    int           `json:"calls"`
	Errors   int           `json:"errors"`
	FirstErr string        `json:"first_error,omitempty"`
	Took     time.Duration `json:"took_ns"`
	Base     snapshot      `json:"base"`      // started, nothing called
	After    snapshot      `json:"after"`     // every domain called once
	Idle     snapshot      `json:"idle"`      // after the idle timeout and a GC
	Settled  *snapshot     `json:"settled"`   // Settle later, after a GC
	IdleWait time.Duration `json:"idle_wait"` // how long until the connections were closed
}

// Lines the federator process writes on stdout.
const (
	linePhaseCalled = "PHASE called"
	lineResult      = "RESULT "
)

// RunDomains registers cfg.Domains SRV names in the testbed DNS, each with
// its own target host, all pointing at one ingress (backend B, in this
// process), then runs a federator for a.example.com in a child process
// (so that its resident set is its own), which calls every domain once and
// reports its RSS after the calls and after the idle timeout.
func RunDomains(ctx context.Context, cfg DomainsConfig) (err error) {
	if cfg.Domains < 1 || cfg.Domains > 99999 || cfg.InFlight < 1 || cfg.IdleTimeout <= 0 {
		return fmt.Errorf("domains mode: need 1 to 99999 domains, a positive in-flight count and idle timeout")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &world{log: slog.New(slog.DiscardHandler)}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if cerr := w.close(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("tear down: %w", cerr))
		}
	}()
	if w.dir, err = os.MkdirTemp("", "fedbench-domains-"); err != nil {
		return fmt.Errorf("temp dir: %w", err)
	}
	w.onClose(func(context.Context) error { return os.RemoveAll(w.dir) })
	if w.ca, err = testbed.NewCA("fedbench CA"); err != nil {
		return err
	}
	if w.dns, err = testbed.NewDNS(); err != nil {
		return err
	}
	if err := w.dns.Start(); err != nil {
		return fmt.Errorf("start dns: %w", err)
	}
	w.onClose(func(context.Context) error { return w.dns.Stop() })
	w.b, err = fedtest.StartBackend(fedtest.BackendOptions{
		Domain: domainB, InfraHost: infraB, CA: w.ca, DNS: w.dns, Dir: w.dir,
		Strategy: "allow-list", AllowList: []string{domainA}, Logger: w.log,
		CertNames: []string{infraB, targetsSAN}, Env: unlimitedEnv,
	})
	if err != nil {
		return err
	}
	w.onClose(w.b.Close)
	if err := unlimited(w.b); err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	srv, err := bus.Serve(sctx, w.b.NATS, w.b.Subjects, echoComponent, echoHandler, w.log)
	if err != nil {
		cancel()
		return fmt.Errorf("echo component: %w", err)
	}
	w.onClose(func(ctx context.Context) error {
		defer cancel()
		return srv.Shutdown(ctx)
	})
	// A: a certificate for infraA, and the SRV record the ingress checks
	// it against (A's own ingress is not needed).
	leaf, err := w.ca.Issue(testbed.LeafOptions{}, infraA)
	if err != nil {
		return err
	}
	files, err := leaf.WriteFiles(w.dir, domainA, w.ca.CertPEM)
	if err != nil {
		return err
	}
	w.dns.SetSRV(domainA, 3600, testbed.SRVRecord{Target: infraA, Port: 9, Priority: 10, Weight: 5})
	if err := w.dns.SetA(infraA, 3600, "127.0.0.1"); err != nil {
		return err
	}
	port, err := portOf(w.b.IngressAddr)
	if err != nil {
		return err
	}
	for i := range cfg.Domains {
		target := fmt.Sprintf(targetFormat, i)
		w.dns.SetSRV(fmt.Sprintf(domainFormat, i), 3600, testbed.SRVRecord{Target: target, Port: port, Priority: 10, Weight: 5})
		if err := w.dns.SetA(target, 3600, "127.0.0.1"); err != nil {
			return err
		}
	}
	cc := childConfig{DNS: w.dns.Addr(), Cert: files.Cert, Key: files.Key, CA: files.CA,
		Domains: cfg.Domains, InFlight: cfg.InFlight, IdleTimeout: cfg.IdleTimeout, HeapProfile: cfg.HeapProfile, Settle: cfg.Settle, GoMemLimit: cfg.GoMemLimit}
	res, peer, err := runChild(ctx, cc, log)
	if err != nil {
		return err
	}
	printDomains(cfg.Out, cfg, res, peer)
	return nil
}

func portOf(addr string) (uint16, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("port of %q: %w", addr, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port of %q: %w", addr, err)
	}
	return uint16(p), nil
}

// runChild runs the federator process and returns its result and this
// (the ingress's) process's snapshot taken when the child had called every
// domain.
func runChild(ctx context.Context, cc childConfig, log *slog.Logger) (childResult, snapshot, error) {
	var res childResult
	var peer snapshot
	exe, err := os.Executable()
	if err != nil {
		return res, peer, fmt.Errorf("own executable: %w", err)
	}
	arg, err := json.Marshal(cc)
	if err != nil {
		return res, peer, fmt.Errorf("child configuration: %w", err)
	}
	cmd := exec.CommandContext(ctx, exe, "-domains-child", string(arg))
	cmd.Stderr = os.Stderr
	cmd.Env = os.Environ()
	if cc.GoMemLimit != "" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+cc.GoMemLimit)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 15 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, peer, fmt.Errorf("child stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return res, peer, fmt.Errorf("start child: %w", err)
	}
	got := false
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == linePhaseCalled:
			if peer, err = takeSnapshot(); err != nil {
				log.Warn("snapshot of the ingress process", "err", err)
			}
		case strings.HasPrefix(line, lineResult):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, lineResult)), &res); err != nil {
				_ = cmd.Wait()
				return res, peer, fmt.Errorf("child result: %w", err)
			}
			got = true
		default:
			log.Info("child", "line", line)
		}
	}
	werr := cmd.Wait()
	if werr != nil {
		return res, peer, fmt.Errorf("child: %w", werr)
	}
	if !got {
		return res, peer, errors.New("child exited without a result")
	}
	return res, peer, nil
}

// DomainsChild is the federator process of the domains mode; arg is the
// JSON childConfig. It writes linePhaseCalled and a lineResult to out.
func DomainsChild(ctx context.Context, arg string, out io.Writer) (err error) {
	var cc childConfig
	if err := json.Unmarshal([]byte(arg), &cc); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log := slog.New(slog.DiscardHandler)
	// The runtime settings of the federator binary.
	setup.TuneRuntime(os.Getenv)
	ns, err := testbed.StartNATS("")
	if err != nil {
		return err
	}
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	// The configuration is read as the federator binary reads its
	// environment (defaults included), from these variables.
	env := map[string]string{
		"FED_DOMAIN":                domainA,
		"FED_NATS_URL":              ns.ClientURL(),
		"FED_DNS_SERVER":            cc.DNS,
		"FED_STRATEGY":              "allow-all",
		"FED_TLS_CERT":              cc.Cert,
		"FED_TLS_KEY":               cc.Key,
		"FED_TLS_CA":                cc.CA,
		"FED_ALLOW_PRIVATE_TARGETS": "true",
		"FED_OPS_ADDR":              "127.0.0.1:0", // not the shared :9090 of the host
		"FED_IDLE_CONN_TIMEOUT":     cc.IdleTimeout.String(),
		"FED_KV_BUCKET":             "", // static configuration: the child's NATS has no JetStream
	}
	fcfg := federator.NewConfig()
	if err := config.Load(ctx, &fcfg, envconfig.MapLookuper(env)); err != nil {
		return err
	}
	if err := fcfg.Validate(); err != nil {
		return err
	}
	sh, err := setup.Open(fcfg.Common, "federator", log)
	if err != nil {
		return err
	}
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	f, err := federator.New(fcfg, federator.Deps{NATS: sh.NATS, Objects: sh.Objects, Resolver: sh.Resolver, Policy: sh.Policy, Certs: sh.Certs, Logger: log})
	if err != nil {
		return err
	}
	if err := f.Start(work); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		err = errors.Join(err, f.Shutdown(sctx), sh.Close(sctx))
	}()
	nc, err := bus.Connect(ns.ClientURL(), "bench client", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	subjects, err := contract.NewSubjects(contract.DefaultPrefix)
	if err != nil {
		return err
	}
	client := bus.NewClient(nc, subjects, "/bench")

	var res childResult
	runtime.GC()
	debug.FreeOSMemory()
	if res.Base, err = takeSnapshot(); err != nil {
		return err
	}
	body := makeBody(256)
	var next, errs atomic.Int64
	var firstErr atomic.Pointer[string]
	start := time.Now()
	var wg sync.WaitGroup
	for range cc.InFlight {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= cc.Domains {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				resp, err := client.Call(cctx, fmt.Sprintf(domainFormat, i), echoComponent, echoRPC, body)
				cancel()
				if err == nil {
					err = checkEcho(body, resp)
				}
				if err != nil {
					errs.Add(1)
					msg := fmt.Sprintf(domainFormat+": %v", i, err)
					firstErr.CompareAndSwap(nil, &msg)
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	res.Took = time.Since(start)
	res.Calls, res.Errors = cc.Domains, int(errs.Load())
	if p := firstErr.Load(); p != nil {
		res.FirstErr = *p
	}
	if res.After, err = takeSnapshot(); err != nil {
		return err
	}
	if err := writeHeapProfile(cc.HeapProfile, ".after"); err != nil {
		return err
	}
	fmt.Fprintln(out, linePhaseCalled)

	// Wait for the idle timeout to close the connections: until the
	// descriptors are back near the base (bounded by the timeout + 30s).
	idleStart := time.Now()
	deadline := idleStart.Add(cc.IdleTimeout + 30*time.Second)
	for time.Now().Before(deadline) {
		if n, err := openFDs(); err == nil && n <= res.Base.FDs+8 {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	res.IdleWait = time.Since(idleStart)
	runtime.GC()
	debug.FreeOSMemory()
	if res.Idle, err = takeSnapshot(); err != nil {
		return err
	}
	if err := writeHeapProfile(cc.HeapProfile, ".idle"); err != nil {
		return err
	}
	if cc.Settle > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(cc.Settle):
		}
		runtime.GC()
		debug.FreeOSMemory()
		s, err := takeSnapshot()
		if err != nil {
			return err
		}
		res.Settled = &s
		if err := writeHeapProfile(cc.HeapProfile, ".settled"); err != nil {
			return err
		}
	}
	data, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	fmt.Fprintln(out, lineResult+string(data))
	return nil
}

// writeHeapProfile writes the heap profile to base+suffix (nothing when
// base is empty).
func writeHeapProfile(base, suffix string) error {
	if base == "" {
		return nil
	}
	f, err := os.Create(base + suffix)
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	return nil
}

// printDomains prints the memory mode's report.
func printDomains(out io.Writer, cfg DomainsConfig, r childResult, peer snapshot) {
	mib := func(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }
	fmt.Fprintf(out, "fedbench domains: %d CPUs, %s, %s\n", runtime.NumCPU(), cpuModel(), runtime.Version())
	fmt.Fprintf(out, "federator of %s (its own process, with its embedded NATS server and the calling client) called %d distinct domains once each,\n", domainA, r.Calls)
	fmt.Fprintf(out, "each with its own SRV target host (one TLS connection each), %d in flight, in %v: %d errors\n", cfg.InFlight, r.Took.Round(time.Millisecond), r.Errors)
	limit := "not set (Go's default: the heap may grow to twice the live heap)"
	if cfg.GoMemLimit != "" {
		limit = cfg.GoMemLimit
	}
	fmt.Fprintf(out, "federator GOMEMLIMIT: %s\n", limit)
	if r.FirstErr != "" {
		fmt.Fprintf(out, "first error: %s\n", r.FirstErr)
	}
	fmt.Fprintf(out, "%-34s %10s %10s %7s %10s %11s %11s\n", "federator process", "VmRSS", "VmHWM", "fds", "goroutines", "heap inuse", "stack inuse")
	row := func(name string, s snapshot) {
		fmt.Fprintf(out, "%-34s %10s %10s %7d %10d %11s %11s\n", name, mib(s.RSSKiB), mib(s.HWMKiB), s.FDs, s.Goroutines, mib(int64(s.HeapInuse/1024)), mib(int64(s.StackInuse/1024)))
	}
	row("started", r.Base)
	row(fmt.Sprintf("after %d domains", r.Calls), r.After)
	row(fmt.Sprintf("idle %v later, after a GC", r.IdleWait.Round(100*time.Millisecond)), r.Idle)
	if r.Settled != nil {
		row(fmt.Sprintf("%v after that, after a GC", cfg.Settle), *r.Settled)
	}
	fmt.Fprintf(out, "ingress process (B, %d inbound connections): VmRSS %s after the calls\n", r.Calls, mib(peer.RSSKiB))
	verdict := "MET"
	if r.After.RSSKiB >= rssTargetMiB*1024 || r.Errors > 0 {
		verdict = "NOT MET"
	}
	fmt.Fprintf(out, "target: %d domains → federator RSS < %d MiB: %s (%s after the calls; idle timeout %v closed %d descriptors)\n",
		r.Calls, rssTargetMiB, verdict, mib(r.After.RSSKiB), cfg.IdleTimeout, r.After.FDs-r.Idle.FDs)
}
