package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/internal/asset"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// ScenarioAsset is the name of the asset mode.
const ScenarioAsset = "asset"

// Targets of issue 13.
const (
	assetRatioTarget  = 0.5 // fedbus throughput / raw HTTPS throughput
	assetMemTargetMiB = 8   // peak memory per transfer, each process
)

// AssetConfig is the asset mode: cargohold's stream-asset through fedbus
// against a raw HTTPS download of the same bytes.
type AssetConfig struct {
	Size       int64 // bytes of the asset
	Rounds     int   // downloads of each kind, interleaved
	Concurrent int   // downloads at once in the memory run
	// Bin are the binaries of the backends' processes; empty: built with
	// go build into a temporary directory.
	Bin    fedtest.Binaries
	Out    io.Writer
	Logger *slog.Logger
}

// BinariesIn returns the binaries of dir (as make build leaves them).
func BinariesIn(dir string) fedtest.Binaries {
	return fedtest.Binaries{Federator: filepath.Join(dir, "federator"), Ingress: filepath.Join(dir, "ingress"), NATSServer: filepath.Join(dir, "nats-server")}
}

// assetWorld is the asset mode's setting: backends A and B whose NATS
// servers, federators and ingresses are processes of their own (the
// production binaries, so that their memory is theirs), B's cargohold and
// A's client in this process, and the raw HTTPS server.
type assetWorld struct {
	*world
	pa, pb    *fedtest.ProcBackend
	rawURL    string
	client    *bus.Client
	raw       *http.Client
	cargohold cargohold
}

// phases are the parts of a download through fedbus, one after the other
// (the contract answers with an object once it is whole): B's cargohold
// stores the asset in B's object store; ingress B streams it to federator
// A, which stores it in A's; A's cargohold reads it.
type phases struct {
	storeB, transfer, readA time.Duration
}

func (p phases) total() time.Duration { return p.storeB + p.transfer + p.readA }

// RunAsset downloads the asset cfg.Rounds times each way, in turns: from
// B's cargohold to A's through fedbus (NATS B's object store, ingress B,
// mutual TLS, federator A, NATS A's object store), and from a Go HTTPS
// server (TLS 1.3, client certificate, HTTP/2) with the same client
// transport as the federator; both ends make and hash the bytes as they
// go. It then downloads cfg.Concurrent at once and reports the growth of
// the peak resident set (VmHWM) of federator A and ingress B per transfer.
func RunAsset(ctx context.Context, cfg AssetConfig) (err error) {
	if cfg.Size <= 0 || cfg.Size > asset.MaxSize || cfg.Rounds < 1 || cfg.Concurrent < 1 {
		return fmt.Errorf("asset mode: need a size of 1 to %d bytes, at least one round and one transfer at once", int64(asset.MaxSize))
	}
	w, err := newAssetWorld(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if cerr := w.close(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("tear down: %w", cerr))
		}
	}()
	out := cfg.Out
	fmt.Fprintf(out, "asset mode: a %s asset (stream-asset, application/octet-stream), %d rounds, interleaved; %s, GOMAXPROCS %d\n",
		mib(cfg.Size), cfg.Rounds, cpuModel(), runtime.GOMAXPROCS(0))
	fmt.Fprintf(out, "fedbus: cargohold B → NATS B object store → ingress B → mTLS HTTP/2 → federator A → NATS A object store → cargohold A (processes: nats-server ×2, federator, ingress; chunks of %d KiB)\n", bus.ChunkSize>>10)
	fmt.Fprintf(out, "raw:    Go HTTPS server (TLS 1.3, client certificate, HTTP/2) → the same x/net/http2 client\n\n")
	// Warm up both paths: connections, buckets, consumers.
	if _, err := w.fedbus(ctx, "warm-up", 1<<20); err != nil {
		return err
	}
	if _, err := w.rawDownload(ctx, "warm-up", 1<<20); err != nil {
		return err
	}
	var fed, raw []time.Duration
	var parts []phases
	hwm0, err := w.hwm()
	if err != nil {
		return err
	}
	rawCPU := make([]time.Duration, len(cpuNames))
	fedCPU := make([]time.Duration, len(cpuNames))
	for i := range cfg.Rounds {
		key := "3-2-bench-" + strconv.Itoa(i)
		c0, err := w.cpu()
		if err != nil {
			return err
		}
		r, err := w.rawDownload(ctx, key, cfg.Size)
		if err != nil {
			return err
		}
		c1, err := w.cpu()
		if err != nil {
			return err
		}
		f, err := w.fedbus(ctx, key, cfg.Size)
		if err != nil {
			return err
		}
		c2, err := w.cpu()
		if err != nil {
			return err
		}
		for j := range cpuNames {
			rawCPU[j] += c1[j] - c0[j]
			fedCPU[j] += c2[j] - c1[j]
		}
		raw, fed, parts = append(raw, r), append(fed, f.total()), append(parts, f)
		fmt.Fprintf(out, "round %d: raw %s (%s), fedbus %s (%s): store in B %s, B → A %s, read in A %s\n", i+1,
			r.Round(time.Millisecond), rate(cfg.Size, r), f.total().Round(time.Millisecond), rate(cfg.Size, f.total()),
			f.storeB.Round(time.Millisecond), f.transfer.Round(time.Millisecond), f.readA.Round(time.Millisecond))
	}
	hwm1, err := w.hwm()
	if err != nil {
		return err
	}
	start := time.Now()
	if err := w.concurrent(ctx, cfg.Concurrent, cfg.Size); err != nil {
		return err
	}
	took := time.Since(start)
	hwm2, err := w.hwm()
	if err != nil {
		return err
	}
	rawMed, fedMed := median(raw), median(fed)
	ratio := float64(rawMed) / float64(fedMed)
	fmt.Fprintf(out, "\n%-34s %12s %12s\n", "median of the rounds", "time", "throughput")
	fmt.Fprintf(out, "%-34s %12s %12s\n", "raw HTTPS download", rawMed.Round(time.Millisecond), rate(cfg.Size, rawMed))
	fmt.Fprintf(out, "%-34s %12s %12s\n", "fedbus (both object stores)", fedMed.Round(time.Millisecond), rate(cfg.Size, fedMed))
	fmt.Fprintf(out, "%d at once through fedbus: %s (%s in all)\n", cfg.Concurrent, took.Round(time.Millisecond), rate(int64(cfg.Concurrent)*cfg.Size, took))
	fmt.Fprintf(out, "\nCPU time per download (mean of the rounds; clock ticks of 10 ms)\n%-16s %10s %10s\n", "process", "raw", "fedbus")
	var rawSum, fedSum time.Duration
	for j, name := range cpuNames {
		r, f := rawCPU[j]/time.Duration(cfg.Rounds), fedCPU[j]/time.Duration(cfg.Rounds)
		rawSum, fedSum = rawSum+r, fedSum+f
		fmt.Fprintf(out, "%-16s %10s %10s\n", name, r.Round(time.Millisecond), f.Round(time.Millisecond))
	}
	fmt.Fprintf(out, "%-16s %10s %10s\n", "all", rawSum.Round(time.Millisecond), fedSum.Round(time.Millisecond))
	fmt.Fprintf(out, "\n%-14s %14s %18s %22s %18s\n", "process", "VmHWM warm", "after one at once", fmt.Sprintf("after %d at once", cfg.Concurrent), "peak per transfer")
	worst := 0.0
	for _, p := range []string{"federator A", "ingress B"} {
		one := float64(hwm1[p]-hwm0[p]) / 1024
		per := float64(hwm2[p]-hwm0[p]) / 1024 / float64(cfg.Concurrent)
		per = max(per, one)
		worst = max(worst, per)
		fmt.Fprintf(out, "%-14s %11.1f MiB %11.1f MiB (+%.1f) %15.1f MiB (+%.1f) %14.1f MiB\n", p,
			float64(hwm0[p])/1024, float64(hwm1[p])/1024, one, float64(hwm2[p])/1024, float64(hwm2[p]-hwm0[p])/1024, per)
	}
	fmt.Fprintf(out, "\ntarget: fedbus ≥ %.1fx the raw download: %s (%.2fx)\n", assetRatioTarget, verdict(ratio >= assetRatioTarget), ratio)
	fmt.Fprintf(out, "target: peak memory per transfer < %d MiB (federator A, ingress B): %s (%.1f MiB)\n", assetMemTargetMiB, verdict(worst < assetMemTargetMiB), worst)
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "MET"
	}
	return "NOT MET"
}

func mib(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

func rate(n int64, d time.Duration) string {
	return fmt.Sprintf("%.0f MiB/s", float64(n)/(1<<20)/d.Seconds())
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// newAssetWorld starts the processes, the components and the raw server.
func newAssetWorld(ctx context.Context, cfg AssetConfig) (_ *assetWorld, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &assetWorld{world: &world{log: slog.New(slog.DiscardHandler)}}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = errors.Join(err, w.close(cctx))
		}
	}()
	if w.dir, err = os.MkdirTemp("", "fedbench-asset-"); err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	w.onClose(func(context.Context) error { return os.RemoveAll(w.dir) })
	bin := cfg.Bin
	if bin.Federator == "" {
		log.Info("building the binaries")
		if bin, err = fedtest.BuildBinaries(ctx, w.dir); err != nil {
			return nil, err
		}
	}
	if w.ca, err = testbed.NewCA("fedbench CA"); err != nil {
		return nil, err
	}
	w.pool = x509.NewCertPool()
	w.pool.AddCert(w.ca.Cert)
	if w.dns, err = testbed.NewDNS(); err != nil {
		return nil, err
	}
	if err := w.dns.Start(); err != nil {
		return nil, fmt.Errorf("start dns: %w", err)
	}
	w.onClose(func(context.Context) error { return w.dns.Stop() })
	env := map[string]string{"FED_INGRESS_ORIGIN_RATE": "0", "FED_INGRESS_ORIGIN_CONCURRENCY": "0"}
	start := func(domain, infra, peer string) (*fedtest.ProcBackend, error) {
		be, err := fedtest.StartProcBackend(ctx, fedtest.BackendOptions{Domain: domain, InfraHost: infra, CA: w.ca, DNS: w.dns, Dir: w.dir,
			Strategy: "allow-list", AllowList: []string{peer}, RequestTimeout: 5 * time.Minute, Env: env}, bin, nil)
		if err != nil {
			return nil, err
		}
		w.onClose(be.Close)
		return be, nil
	}
	if w.pa, err = start(domainA, infraA, domainB); err != nil {
		return nil, err
	}
	if w.pb, err = start(domainB, infraB, domainA); err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	srv, err := bus.Serve(sctx, w.pb.NATS, w.pb.Subjects, "cargohold", w.cargohold.handle, w.log)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("cargohold: %w", err)
	}
	w.onClose(func(ctx context.Context) error {
		defer cancel()
		return srv.Shutdown(ctx)
	})
	w.client = w.pa.Client("/cargohold")
	if w.clientCert, err = tls.LoadX509KeyPair(w.pa.Files.Cert, w.pa.Files.Key); err != nil {
		return nil, fmt.Errorf("load A's certificate: %w", err)
	}
	if w.serverCert, err = tls.LoadX509KeyPair(w.pb.Files.Cert, w.pb.Files.Key); err != nil {
		return nil, fmt.Errorf("load B's certificate: %w", err)
	}
	raw := &http.Server{
		Handler: http.HandlerFunc(rawAsset),
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{w.serverCert},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    w.pool,
			NextProtos:   []string{"h2"},
		},
		ReadHeaderTimeout: 5 * time.Second,
	}
	addr, err := w.serveHTTP(raw)
	if err != nil {
		return nil, err
	}
	w.rawURL = "https://" + addr + contract.Path("cargohold", asset.RPC)
	w.raw = w.h2Client()
	return w, nil
}

// cargohold is B's stand-in cargohold: stream-asset answers the generated
// asset through the object store. It records how long the last store took.
type cargohold struct {
	mu    sync.Mutex
	lastB time.Duration
}

func (c *cargohold) handle(ctx context.Context, req *bus.Request) ([]byte, error) {
	r, err := asset.ParseRequest(req.Body)
	if err != nil {
		return nil, contract.Errorf(contract.LabelInvalidRequest, "%v", err)
	}
	start := time.Now()
	defer func() {
		c.mu.Lock()
		c.lastB = time.Since(start)
		c.mu.Unlock()
	}()
	return req.ReplyStream(ctx, contract.ContentTypeOctetStream, asset.New(r.Key, r.Size))
}

func (c *cargohold) last() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastB
}

// rawAsset serves the generated asset as the HTTP body, as a cargohold
// behind a plain HTTPS server would.
func rawAsset(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := asset.ParseRequest(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set(contract.HTTPContentType, contract.ContentTypeOctetStream)
	w.Header().Set("Content-Length", strconv.FormatInt(req.Size, 10))
	_, _ = io.Copy(w, asset.New(req.Key, req.Size))
}

// check compares what arrived with the asset.
func check(key string, size int64, h *asset.Hasher) error {
	if h.Size() != size || h.Sum() != asset.Digest(key, size) {
		return fmt.Errorf("asset %s: %d bytes arrived, not the %d bytes of the asset", key, h.Size(), size)
	}
	return nil
}

// fedbus downloads the asset through fedbus and returns how long it took
// until the last byte was read (the digest is checked after), by phase.
func (w *assetWorld) fedbus(ctx context.Context, key string, size int64) (phases, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := time.Now()
	body, err := w.client.CallStream(ctx, domainB, "cargohold", asset.RPC, asset.Body(key, size))
	if err != nil {
		return phases{}, fmt.Errorf("fedbus download %s: %w", key, err)
	}
	answered := time.Since(start)
	h := asset.NewHasher()
	_, err = io.Copy(h, body)
	p := phases{storeB: w.cargohold.last(), readA: time.Since(start) - answered}
	p.transfer = answered - p.storeB
	if cerr := body.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return phases{}, fmt.Errorf("fedbus download %s: %w", key, err)
	}
	return p, check(key, size, h)
}

// rawDownload downloads the asset from the raw HTTPS server.
func (w *assetWorld) rawDownload(ctx context.Context, key string, size int64) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.rawURL, bytes.NewReader(asset.Body(key, size)))
	if err != nil {
		return 0, err
	}
	req.Header.Set(contract.HTTPContentType, contract.ContentTypeJSON)
	resp, err := w.raw.Do(req)
	if err != nil {
		return 0, fmt.Errorf("raw download %s: %w", key, err)
	}
	h := asset.NewHasher()
	_, err = io.Copy(h, resp.Body)
	took := time.Since(start)
	_ = resp.Body.Close()
	if err != nil {
		return 0, fmt.Errorf("raw download %s: %w", key, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("raw download %s: %s", key, resp.Status)
	}
	return took, check(key, size, h)
}

// concurrent downloads n assets at once through fedbus.
func (w *assetWorld) concurrent(ctx context.Context, n int, size int64) error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = w.fedbus(ctx, "3-2-concurrent-"+strconv.Itoa(i), size)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// cpuNames are the processes whose CPU time cpu reports, in order.
var cpuNames = []string{"components", "nats-server B", "ingress B", "federator A", "nats-server A"}

// cpu returns the CPU time used so far by this process (the components,
// and the raw HTTPS client and server) and by the backends' processes.
func (w *assetWorld) cpu() ([]time.Duration, error) {
	out := make([]time.Duration, len(cpuNames))
	errs := make([]error, len(cpuNames))
	out[0], errs[0] = processCPU()
	for i, p := range []*fedtest.Proc{w.pb.NATSServer, w.pb.Ingress, w.pa.Federator, w.pa.NATSServer} {
		out[i+1], errs[i+1] = procCPU(p.Pid())
	}
	return out, errors.Join(errs...)
}

// cpuSince returns the CPU time used since before, per process.
func (w *assetWorld) cpuSince(before []time.Duration) ([]time.Duration, error) {
	now, err := w.cpu()
	for i := range now {
		now[i] -= before[i]
	}
	return now, err
}

// hwm returns the peak resident set (KiB) of federator A and ingress B.
func (w *assetWorld) hwm() (map[string]int64, error) {
	fa, err1 := w.pa.Federator.Status("VmHWM")
	ib, err2 := w.pb.Ingress.Status("VmHWM")
	return map[string]int64{"federator A": fa, "ingress B": ib}, errors.Join(err1, err2)
}
