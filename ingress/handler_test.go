package ingress

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/sethvargo/go-envconfig"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/test/testbed"
	"github.com/fedbus/fedbus/tlsconf"
)

// stubResolver answers HasTarget without DNS: originA's only target is
// infraA; a few domains fail the way discovery does.
type stubResolver struct{}

func (stubResolver) HasTarget(_ context.Context, domain, san string) (bool, error) {
	switch domain {
	case noSRV:
		return false, fmt.Errorf("discover %s: %w", domain, discovery.ErrNotFound)
	case dotSRV:
		return false, fmt.Errorf("discover %s: %w", domain, discovery.ErrServiceUnavailable)
	case servFail:
		return false, fmt.Errorf("discover %s: %w", domain, discovery.ErrLookup)
	case dropped:
		return false, fmt.Errorf("discover %s: %w", domain, context.DeadlineExceeded)
	case originA:
		return strings.EqualFold(san, infraA), nil
	}
	return false, nil
}

// stubWorld is an Ingress with a stub resolver and a stub NATS exchange,
// and a certificate to put into a fake r.TLS.
type stubWorld struct {
	in        *Ingress
	ca        *testbed.CA
	certA     *testbed.Leaf
	published atomic.Int64
}

// newStubWorld builds the ingress; exchange nil is an echo that checks the
// message it is given.
func newStubWorld(tb testing.TB, maxBody int64, exchange exchangeFunc) *stubWorld {
	tb.Helper()
	w := &stubWorld{ca: newCA(tb, "stub CA")}
	w.certA = issue(tb, w.ca, testbed.LeafOptions{}, infraA)
	pol, err := policy.New(contract.AllowAll, nil)
	if err != nil {
		tb.Fatal(err)
	}
	subjects, err := contract.NewSubjects("fed")
	if err != nil {
		tb.Fatal(err)
	}
	if exchange == nil {
		exchange = func(_ context.Context, msg *nats.Msg) (bus.Event, error) {
			w.published.Add(1)
			route, err := subjects.ParseIn(msg.Subject)
			if err != nil {
				return bus.Event{}, fmt.Errorf("published on invalid subject %q: %w", msg.Subject, err)
			}
			if strings.ContainsAny(msg.Subject, "*> \t\r\n") || msg.Header.Get(contract.HeaderOriginDomain) != route.Domain {
				return bus.Event{}, fmt.Errorf("published on bad subject %q", msg.Subject)
			}
			ev, err := bus.Decode(msg)
			if err != nil {
				return bus.Event{}, fmt.Errorf("published an invalid event: %w", err)
			}
			if route.RPC == "fail" {
				return bus.Event{}, &contract.Error{Code: 404, Label: "not-found", Message: "nope"}
			}
			body, err := json.Marshal(map[string]string{"rpc": route.RPC, "id": ev.ID})
			return bus.Reply(ev, "/brig", body), err
		}
	}
	cfg := NewConfig()
	cfg.Components, cfg.RequestTimeout, cfg.MaxBodyBytes = []string{"brig", "galley"}, 5*time.Second, maxBody
	cfg.OriginRate, cfg.OriginBurst, cfg.OriginConcurrency = 0, 0, 0
	cfg.CertRate, cfg.CertBurst, cfg.CertConcurrency, cfg.AuthFailureRate, cfg.AuthFailureBurst = 0, 0, 0, 0, 0
	w.in, err = newIngress(cfg, Deps{Policy: pol, Certs: w.ca.CertStore(tb, w.certA), Logger: testLogger(tb)}, stubResolver{}, exchange)
	if err != nil {
		tb.Fatal(err)
	}
	return w
}

// trusted returns a connection state as the TLS server leaves it after
// verifying cert.
func (w *stubWorld) trusted(cert *x509.Certificate) *tls.ConnectionState {
	return &tls.ConnectionState{
		Version:           tls.VersionTLS13,
		HandshakeComplete: true,
		PeerCertificates:  []*x509.Certificate{cert},
		VerifiedChains:    [][]*x509.Certificate{{cert, w.ca.Cert}},
	}
}

// countingWriter counts how many responses a handler starts.
type countingWriter struct {
	*httptest.ResponseRecorder
	headers int
	started bool
}

func (c *countingWriter) WriteHeader(code int) {
	c.headers++
	c.started = true
	c.ResponseRecorder.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if !c.started {
		c.headers++
		c.started = true
	}
	return c.ResponseRecorder.Write(p)
}

// serve runs ServeHTTP on r and checks the invariants of every response:
// exactly one, a status in 200..599, a contract JSON body for errors.
func serve(tb testing.TB, in *Ingress, r *http.Request) (*httptest.ResponseRecorder, *contract.Error) {
	tb.Helper()
	w := &countingWriter{ResponseRecorder: httptest.NewRecorder()}
	in.ServeHTTP(w, r)
	if w.headers != 1 {
		tb.Fatalf("%d responses, want exactly 1", w.headers)
	}
	res := w.ResponseRecorder
	if res.Code < 200 || res.Code > 599 {
		tb.Fatalf("status %d", res.Code)
	}
	if ct := res.Header().Get("Content-Type"); ct != "application/json" {
		tb.Fatalf("Content-Type %q", ct)
	}
	if res.Code == http.StatusOK {
		return res, nil
	}
	var e contract.Error
	if err := json.Unmarshal(res.Body.Bytes(), &e); err != nil {
		tb.Fatalf("error body %q is not JSON: %v", res.Body.Bytes(), err)
	}
	if e.Code != res.Code || e.Label == "" || e.Message == "" {
		tb.Fatalf("error body %s with status %d", res.Body.Bytes(), res.Code)
	}
	return res, &e
}

// newRequest builds a server-side request as net/http would hand it over.
func newRequest(method, target string, header http.Header, body []byte, cs *tls.ConnectionState) *http.Request {
	r := httptest.NewRequest(method, "https://b.example/", bytes.NewReader(body))
	u, err := url.ParseRequestURI(target)
	if err != nil {
		u = &url.URL{Path: target}
	}
	r.URL = u
	r.RequestURI = target
	r.Header = header
	if r.Header == nil {
		r.Header = http.Header{}
	}
	r.TLS = cs
	return r
}

// TestHandlerCertificate checks the certificate step with connection states
// the TLS server would not normally produce.
func TestHandlerCertificate(t *testing.T) {
	w := newStubWorld(t, 1024, nil)
	serverOnly := issue(t, w.ca, testbed.LeafOptions{Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, infraA)
	anyEKU := issue(t, w.ca, testbed.LeafOptions{Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}, infraA)
	noEKU := issue(t, w.ca, testbed.LeafOptions{Usages: []x509.ExtKeyUsage{}}, infraA)
	unverified := w.trusted(w.certA.Cert)
	unverified.VerifiedChains = nil
	cases := []struct {
		name  string
		cs    *tls.ConnectionState
		label string // "" for success
	}{
		{"plain HTTP", nil, contract.LabelNoClientCertificate},
		{"no peer certificate", &tls.ConnectionState{HandshakeComplete: true}, contract.LabelNoClientCertificate},
		{"not verified", unverified, contract.LabelAuthenticationFailure},
		{"server authentication only", w.trusted(serverOnly.Cert), contract.LabelAuthenticationFailure},
		{"any extended key usage", w.trusted(anyEKU.Cert), ""},
		{"no extended key usage", w.trusted(noEKU.Cert), ""},
		{"client authentication", w.trusted(w.certA.Cert), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := w.published.Load()
			r := newRequest("POST", "/federation/brig/x", origin(originA), []byte(`{}`), tc.cs)
			res, e := serve(t, w.in, r)
			switch {
			case tc.label == "" && e != nil:
				t.Fatalf("refused: %s", res.Body.Bytes())
			case tc.label != "" && (e == nil || e.Label != tc.label):
				t.Fatalf("got %d %s, want %s", res.Code, res.Body.Bytes(), tc.label)
			case tc.label != "" && w.published.Load() != before:
				t.Fatalf("a refused request was published")
			}
		})
	}
}

// TestHandlerDiscoveryErrors checks the mapping of discovery errors.
func TestHandlerDiscoveryErrors(t *testing.T) {
	w := newStubWorld(t, 1024, nil)
	for _, tc := range []struct {
		origin string
		status int
		label  string
	}{
		{noSRV, 422, contract.LabelInvalidDomain},
		{dotSRV, 422, contract.LabelInvalidDomain},
		{servFail, 400, contract.LabelDiscoveryFailure},
		{dropped, 504, contract.LabelTimeout},
		{originC, 403, contract.LabelAuthenticationFailure},
	} {
		t.Run(tc.origin, func(t *testing.T) {
			r := newRequest("POST", "/federation/brig/x", origin(tc.origin), []byte(`{}`), w.trusted(w.certA.Cert))
			res, e := serve(t, w.in, r)
			if e == nil || e.Label != tc.label || res.Code != tc.status {
				t.Fatalf("got %d %s, want %d %s", res.Code, res.Body.Bytes(), tc.status, tc.label)
			}
			if strings.Contains(e.Message, "127.0.0.1") {
				t.Errorf("message %q reveals DNS details", e.Message)
			}
		})
	}
}

// TestHandlerPanic checks that a panic becomes one 500 response.
func TestHandlerPanic(t *testing.T) {
	w := newStubWorld(t, 1024, func(context.Context, *nats.Msg) (bus.Event, error) { panic("boom") })
	r := newRequest("POST", "/federation/brig/x", origin(originA), []byte(`{}`), w.trusted(w.certA.Cert))
	res, e := serve(t, w.in, r)
	if e == nil || res.Code != 500 || e.Label != contract.LabelServerError {
		t.Fatalf("got %d %s", res.Code, res.Body.Bytes())
	}
}

// TestHandlerBody checks the body limit with and without Content-Length.
func TestHandlerBody(t *testing.T) {
	w := newStubWorld(t, 16, nil)
	for _, tc := range []struct {
		name   string
		size   int
		length int64 // -1: unknown
		status int
	}{
		{"at the limit", 16, 16, 200},
		{"empty", 0, 0, 200},
		{"over the limit", 17, 17, 413},
		{"over the limit, length unknown", 17, -1, 413},
		{"length understated", 100, 10, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRequest("POST", "/federation/brig/x", origin(originA), bytes.Repeat([]byte("x"), tc.size), w.trusted(w.certA.Cert))
			r.ContentLength = tc.length
			if tc.length == -1 {
				r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(bytes.Repeat([]byte("x"), tc.size))))
			}
			res, _ := serve(t, w.in, r)
			if res.Code != tc.status {
				t.Fatalf("got %d %s, want %d", res.Code, res.Body.Bytes(), tc.status)
			}
		})
	}
}

// TestDeadline checks how Request-Timeout-Ms bounds the request.
func TestDeadline(t *testing.T) {
	w := newStubWorld(t, 16, nil) // RequestTimeout 5s
	start := time.Now()
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{
		{"", 5 * time.Second},
		{"100", 100 * time.Millisecond},
		{"4999", 4999 * time.Millisecond},
		{"60000", 5 * time.Second},
		{"0", 5 * time.Second},
		{"-5", 5 * time.Second},
		{"+5", 5 * time.Second},
		{"1e3", 5 * time.Second},
		{" 100", 5 * time.Second},
		{"99999999999999999999999", 5 * time.Second},
	} {
		t.Run(tc.header, func(t *testing.T) {
			if got := w.in.deadlineOf(start, tc.header).Sub(start); got != tc.want {
				t.Errorf("timeout %v, want %v", got, tc.want)
			}
		})
	}
}

// TestConfig checks loading from the environment and validation.
func TestConfig(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{}
	for _, name := range []string{"cert.pem", "key.pem", "ca.pem"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		files[name] = p
	}
	env := map[string]string{
		"FED_DOMAIN":   "B.example.com",
		"FED_TLS_CERT": files["cert.pem"],
		"FED_TLS_KEY":  files["key.pem"],
		"FED_TLS_CA":   files["ca.pem"],
	}
	t.Run("defaults", func(t *testing.T) {
		cfg := NewConfig()
		if err := config.Load(context.Background(), &cfg, envconfig.MapLookuper(env)); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Validate: %v", err)
		}
		cfg.Normalize()
		if cfg.Addr != ":8443" || cfg.MaxBodyBytes != 1048576 || cfg.Domain != "b.example.com" || cfg.RequestTimeout != 10*time.Second {
			t.Errorf("got %+v", cfg)
		}
	})
	t.Run("usage lists the ingress variables", func(t *testing.T) {
		var b bytes.Buffer
		cfg := NewConfig()
		config.Usage(&b, &cfg)
		for _, v := range []string{"FED_INGRESS_ADDR", "FED_MAX_BODY_BYTES", "FED_DOMAIN", "FED_TLS_CA"} {
			if !strings.Contains(b.String(), v) {
				t.Errorf("usage misses %s:\n%s", v, b.String())
			}
		}
	})
	for _, tc := range []struct {
		name string
		set  map[string]string
		want []string
	}{
		{"bad address", map[string]string{"FED_INGRESS_ADDR": "8443"}, []string{"FED_INGRESS_ADDR"}},
		{"bad port", map[string]string{"FED_INGRESS_ADDR": ":https"}, []string{"FED_INGRESS_ADDR"}},
		{"zero body", map[string]string{"FED_MAX_BODY_BYTES": "0"}, []string{"FED_MAX_BODY_BYTES"}},
		{"every problem at once", map[string]string{"FED_MAX_BODY_BYTES": "-1", "FED_INGRESS_ADDR": "x", "FED_DOMAIN": "*"},
			[]string{"FED_MAX_BODY_BYTES", "FED_INGRESS_ADDR", "FED_DOMAIN"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := map[string]string{}
			for k, v := range env {
				m[k] = v
			}
			for k, v := range tc.set {
				m[k] = v
			}
			cfg := NewConfig()
			err := errors.Join(config.Load(context.Background(), &cfg, envconfig.MapLookuper(m)), cfg.Validate())
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
}

// TestNew checks New's refusals.
func TestNew(t *testing.T) {
	e := newEnv(t, envOpts{})
	good := func() (Config, Deps) {
		pol, _ := policy.New(contract.AllowAll, nil)
		return NewConfig(), Deps{NATS: e.nc, Resolver: e.resolver, Policy: pol, Certs: e.in.certs, Logger: testLogger(t)}
	}
	for _, tc := range []struct {
		name   string
		change func(*Config, *Deps)
	}{
		{"no NATS", func(_ *Config, d *Deps) { d.NATS = nil }},
		{"no resolver", func(_ *Config, d *Deps) { d.Resolver = nil }},
		{"no policy", func(_ *Config, d *Deps) { d.Policy = nil }},
		{"no certificates", func(_ *Config, d *Deps) { d.Certs = (*tlsconf.Store)(nil) }},
		{"negative body limit", func(c *Config, _ *Deps) { c.MaxBodyBytes = -1 }},
		{"negative timeout", func(c *Config, _ *Deps) { c.RequestTimeout = -time.Second }},
		{"bad prefix", func(c *Config, _ *Deps) { c.SubjectPrefix = "a.*" }},
		{"bad component", func(c *Config, _ *Deps) { c.Components = []string{"Brig"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, deps := good()
			tc.change(&cfg, &deps)
			if _, err := New(cfg, deps); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		cfg, deps := good()
		in, err := New(cfg, deps)
		if err != nil {
			t.Fatal(err)
		}
		// FED_MAX_BODY_BYTES (1 MiB) is lowered to what the NATS server
		// carries with the headers: the server has the default 1 MiB.
		if in.cfg.Addr != ":8443" || in.cfg.MaxBodyBytes != 1<<20-bus.HeaderRoom || in.cfg.RequestTimeout != 10*time.Second || len(in.components) != 3 {
			t.Errorf("got %+v", in.cfg)
		}
		if in.Addr() != nil {
			t.Errorf("Addr %v before Serve", in.Addr())
		}
	})
	t.Run("Start", func(t *testing.T) {
		cfg, deps := good()
		cfg.Addr = "127.0.0.1:0"
		in, err := New(cfg, deps)
		if err != nil {
			t.Fatal(err)
		}
		if err := in.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for in.Addr() == nil {
			if time.Now().After(deadline) {
				t.Fatal("Addr stays nil")
			}
			time.Sleep(5 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := in.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-in.Failed():
			t.Fatalf("serving failed: %v", err)
		default:
		}
	})
	t.Run("Start on a bad address", func(t *testing.T) {
		cfg, deps := good()
		cfg.Addr = "127.0.0.1:-1"
		in, err := New(cfg, deps)
		if err != nil {
			t.Fatal(err)
		}
		if err := in.Start(context.Background()); err == nil {
			t.Fatal("Start on port -1 succeeded")
		}
	})
}

// TestEveryLineHasTheRequestID: each log line a request causes carries its
// Request-Id (the ingress builds no per-request logger; every line must
// add it), for a success, a component's error, a refusal and a panic.
func TestEveryLineHasTheRequestID(t *testing.T) {
	for _, tc := range []struct {
		name     string
		target   string
		exchange exchangeFunc
	}{
		{"served", "/federation/brig/x", nil},
		{"component error", "/federation/brig/fail", nil},
		{"refused", "/federation/nope/x", nil},
		{"panic", "/federation/brig/x", func(context.Context, *nats.Msg) (bus.Event, error) { panic("boom") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newStubWorld(t, 1024, tc.exchange)
			var logs testbed.LogBuffer
			w.in.log = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			const id = "line-check-42"
			h := origin(originA)
			h.Set(contract.HTTPRequestID, id)
			serve(t, w.in, newRequest("POST", tc.target, h, []byte(`{}`), w.trusted(w.certA.Cert)))
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if len(lines) == 0 || lines[0] == "" {
				t.Fatal("no log line")
			}
			for _, line := range lines {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				if m["request_id"] != id {
					t.Errorf("line without request_id %q: %s", id, line)
				}
			}
		})
	}
}
