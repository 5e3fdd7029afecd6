// Package ops is the operations endpoint of a fedbus process (contract
// section 7): plain HTTP on FED_OPS_ADDR, apart from the federation port,
// with
//
//   - GET /livez: 200 while the process is not wedged (the handler runs);
//     it checks no dependency, so that a NATS or DNS outage never makes
//     Kubernetes restart every pod at once;
//   - GET /readyz: 200 when every named check passes, else 503; the body
//     names each check and its state, for people ("[+]nats ok", "[-]dns
//     failed: ..."); a stopping process answers 503 (check "shutdown")
//     before it drains;
//   - GET /metrics: the Prometheus text format of the process's registry.
//
// Probe is the client side: the -healthcheck mode of the binaries, for
// images without a shell or curl.
package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Paths of the endpoints.
const (
	PathLive    = "/livez"
	PathReady   = "/readyz"
	PathMetrics = "/metrics"
)

// CheckTimeout bounds one readiness check.
const CheckTimeout = 2 * time.Second

// ErrStopping is the state of the "shutdown" check of a stopping process.
var ErrStopping = errors.New("stopping: no new work taken, requests in flight finishing")

// Check is one named readiness check: nil means ready; the error says why
// not, for a person reading /readyz. It must honour ctx (CheckTimeout).
type Check struct {
	Name string
	Run  func(ctx context.Context) error
}

// Result is the outcome of one check.
type Result struct {
	Name string `json:"name"`
	OK   bool   `json:"ok"`
	// Detail is the error of a failed check, or what a passing check
	// wants a person to know (e.g. when the certificate expires).
	Detail string `json:"detail,omitempty"`
}

// Detailer is an error that a passing check returns to show a detail:
// the check passes and Detail is shown.
type Detailer interface{ Detail() string }

// Passed returns the "error" of a passing check that shows detail on
// /readyz.
func Passed(format string, args ...any) error { return passed(fmt.Sprintf(format, args...)) }

type passed string

func (p passed) Error() string  { return string(p) }
func (p passed) Detail() string { return string(p) }

// Server serves the operations endpoints.
type Server struct {
	log      *slog.Logger
	gatherer prometheus.Gatherer
	mux      *http.ServeMux
	srv      *http.Server
	stopping atomic.Bool

	mu     sync.Mutex
	checks []Check
	addr   net.Addr

	wg sync.WaitGroup
}

// New returns a server of gatherer's metrics (nil: no /metrics) logging to
// log. Add the readiness checks, then Start.
func New(gatherer prometheus.Gatherer, log *slog.Logger) *Server {
	s := &Server{log: log, gatherer: gatherer, mux: http.NewServeMux()}
	s.mux.HandleFunc("GET "+PathLive, s.live)
	s.mux.HandleFunc("GET "+PathReady, s.ready)
	if gatherer != nil {
		s.mux.Handle("GET "+PathMetrics, promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{
			ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
			ErrorHandling: promhttp.ContinueOnError,
		}))
	}
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s
}

// AddCheck adds a readiness check; checks run in the order added.
func (s *Server) AddCheck(name string, run func(ctx context.Context) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks = append(s.checks, Check{Name: name, Run: run})
}

// Handler returns the endpoints' handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.mux }

// Start listens on addr and serves in the background until Shutdown.
func (s *Server) Start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("ops: listen on %s (FED_OPS_ADDR): %w", addr, err)
	}
	s.mu.Lock()
	s.addr = ln.Addr()
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("ops endpoint failed", "addr", addr, "err", err)
		}
	}()
	s.log.Info("ops endpoint listening", "addr", ln.Addr().String(), "paths", PathLive+" "+PathReady+" "+PathMetrics)
	return nil
}

// Addr returns the address the server listens on, nil before Start.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// SetStopping makes /readyz answer 503 from now on: the process is about
// to drain, and load balancers should stop sending it work.
func (s *Server) SetStopping() { s.stopping.Store(true) }

// Shutdown stops the server, bounded by ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	s.wg.Wait()
	if err != nil {
		return fmt.Errorf("ops: shutdown: %w", err)
	}
	return nil
}

func (s *Server) live(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = io.WriteString(w, "ok\n")
}

// Ready runs the checks (concurrently, each bounded by CheckTimeout) and
// returns their results in order, and whether all passed.
func (s *Server) Ready(ctx context.Context) ([]Result, bool) {
	s.mu.Lock()
	checks := append([]Check(nil), s.checks...)
	s.mu.Unlock()
	results := make([]Result, len(checks), len(checks)+1)
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, CheckTimeout)
			defer cancel()
			results[i] = run(cctx, c)
		})
	}
	wg.Wait()
	if s.stopping.Load() {
		results = append(results, Result{Name: "shutdown", Detail: ErrStopping.Error()})
	}
	ok := true
	for _, r := range results {
		ok = ok && r.OK
	}
	return results, ok
}

// run runs one check, turning a panic into a failure.
func run(ctx context.Context, c Check) (r Result) {
	r.Name = c.Name
	defer func() {
		if p := recover(); p != nil {
			r.OK, r.Detail = false, fmt.Sprintf("check panicked: %v", p)
		}
	}()
	err := c.Run(ctx)
	var d Detailer
	switch {
	case err == nil:
		r.OK = true
	case errors.As(err, &d):
		r.OK, r.Detail = true, d.Detail()
	default:
		r.Detail = err.Error()
	}
	return r
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	results, ok := s.Ready(r.Context())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, FormatReady(results, ok))
}

// FormatReady is the /readyz body: one line per check, then the verdict.
func FormatReady(results []Result, ok bool) string {
	var b strings.Builder
	for _, r := range results {
		mark, state := "[-]", "failed"
		if r.OK {
			mark, state = "[+]", "ok"
		}
		b.WriteString(mark + r.Name + " " + state)
		if r.Detail != "" {
			b.WriteString(": " + strings.ReplaceAll(r.Detail, "\n", "; "))
		}
		b.WriteByte('\n')
	}
	if ok {
		b.WriteString("ready\n")
	} else {
		b.WriteString("not ready\n")
	}
	return b.String()
}

// ProbeURL returns the URL of path on the ops address addr as seen from
// the same host: an empty or unspecified host becomes 127.0.0.1.
func ProbeURL(addr, path string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("ops address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}

// Probe GETs url and returns nil for a 200, else an error with the body
// (the -healthcheck mode of the binaries).
func Probe(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("probe %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("probe %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", fmt.Errorf("probe %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("probe %s: %s", url, resp.Status)
	}
	return string(body), nil
}
