package ingress

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/fedbus/fedbus/metrics"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/test/testbed"
	"github.com/fedbus/fedbus/tlsconf"
)

// ServeHTTP without the network: the request is built as net/http hands
// it over after a verified TLS 1.3 handshake (a fake ConnectionState with
// the verified chain), the response goes to a writer that keeps nothing.

const (
	benchOriginA = "a.example.com"
	benchInfraA  = "fed.a-infra.example.net"
)

// benchTargets is a resolver whose only answer is benchOriginA →
// benchInfraA (what the cached discovery answers).
type benchTargets struct{}

func (benchTargets) HasTarget(_ context.Context, domain, san string) (bool, error) {
	return domain == benchOriginA && san == benchInfraA, nil
}

// benchWriter is a ResponseWriter that keeps only the status and the size.
type benchWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *benchWriter) Header() http.Header { return w.h }
func (w *benchWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *benchWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	w.n += len(p)
	return len(p), nil
}

func (w *benchWriter) reset() {
	clear(w.h)
	w.code, w.n = 0, 0
}

// benchReusableBody is a request body that can be rewound.
type benchReusableBody struct{ bytes.Reader }

func (*benchReusableBody) Close() error { return nil }

// benchSetup is B's certificate store and policy (allowing A), and a
// connection state carrying A's verified certificate.
type benchSetup struct {
	store *tlsconf.Store
	pol   *policy.Policy
	cs    *tls.ConnectionState
}

func newBenchSetup(b *testing.B) benchSetup {
	b.Helper()
	ca := newCA(b, "bench CA")
	leafA := issue(b, ca, testbed.LeafOptions{}, benchInfraA)
	leafB := issue(b, ca, testbed.LeafOptions{}, "fed.b-infra.example.net")
	pol, err := policy.New("allow-list", []string{benchOriginA})
	if err != nil {
		b.Fatal(err)
	}
	return benchSetup{store: ca.CertStore(b, leafB), pol: pol, cs: &tls.ConnectionState{
		Version:            tls.VersionTLS13,
		HandshakeComplete:  true,
		NegotiatedProtocol: "h2",
		PeerCertificates:   []*x509.Certificate{leafA.Cert},
		VerifiedChains:     [][]*x509.Certificate{{leafA.Cert, ca.Cert}},
	}}
}

// benchConfig is the ingress's default configuration for components, but
// for the rates, which one client would exceed: no origin limit, and a
// certificate limit whose rate is never reached (its concurrency and the
// failed-authentication check run as in production, and cost what they
// cost).
func benchConfig(components []string) Config {
	cfg := NewConfig()
	cfg.Components, cfg.OriginRate, cfg.OriginBurst, cfg.OriginConcurrency = components, 0, 0, 0
	cfg.CertRate, cfg.CertBurst = 1e9, 1e9
	return cfg
}

// stubIngress is an ingress for components with a resolver stub and an
// exchange that echoes the request body without NATS.
func (s benchSetup) stubIngress(b *testing.B, components []string, log *slog.Logger) *Ingress {
	b.Helper()
	exchange := func(_ context.Context, msg *nats.Msg) (bus.Event, error) { return bus.Event{Data: msg.Data}, nil }
	cfg := benchConfig(components)
	in, err := newIngress(cfg, Deps{Policy: s.pol, Certs: s.store, Logger: log}, benchTargets{}, exchange)
	if err != nil {
		b.Fatal(err)
	}
	return in
}

// benchRequest returns the request template of one federated call from A
// (as the federator sends it) and its rewindable body.
func benchRequest(cs *tls.ConnectionState, body []byte) (*http.Request, *benchReusableBody) {
	rb := &benchReusableBody{}
	rb.Reset(body)
	r := &http.Request{
		Method:     http.MethodPost,
		URL:        &url.URL{Path: "/federation/brig/get-user-by-handle"},
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header: http.Header{
			contract.HTTPOriginDomain:   []string{benchOriginA},
			contract.HTTPContentType:    []string{contract.ContentTypeJSON},
			contract.HTTPRequestID:      []string{"bench-request-id"},
			contract.HTTPRequestTimeout: []string{"10000"},
		},
		Body:          rb,
		ContentLength: int64(len(body)),
		Host:          "fed.b-infra.example.net",
		RemoteAddr:    "127.0.0.1:40000",
		RequestURI:    "/federation/brig/get-user-by-handle",
		TLS:           cs,
	}
	return r.WithContext(context.Background()), rb
}

var benchBodySizes = []int{256, 64 << 10}

func benchName(n int) string {
	if n >= 1<<10 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// runServeHTTP calls in.ServeHTTP with the template request in a loop and
// checks every answer.
func runServeHTTP(b *testing.B, in *Ingress, cs *tls.ConnectionState, size int) {
	body := bytes.Repeat([]byte("x"), size)
	tmpl, rb := benchRequest(cs, body)
	w := &benchWriter{h: make(http.Header, 4)}
	b.ReportAllocs()
	b.SetBytes(int64(size))
	for b.Loop() {
		rb.Reset(body)
		r := *tmpl
		w.reset()
		in.ServeHTTP(w, &r)
		if w.code != http.StatusOK || w.n != size {
			b.Fatalf("status %d, %d bytes", w.code, w.n)
		}
	}
}

// BenchmarkServeHTTP is the ingress handler alone: the seven checks with a
// resolver stub, the CloudEvent built, and an exchange that echoes the
// request body without NATS.
func BenchmarkServeHTTP(b *testing.B) {
	s := newBenchSetup(b)
	in := s.stubIngress(b, []string{"brig", "galley", "cargohold"}, slog.New(slog.DiscardHandler))
	for _, size := range benchBodySizes {
		b.Run(benchName(size), func(b *testing.B) { runServeHTTP(b, in, s.cs, size) })
	}
}

// BenchmarkServeHTTPLogged is BenchmarkServeHTTP/256B with the
// production logger (JSON at info, one line per request) writing to
// io.Discard: the cost of the access log line.
func BenchmarkServeHTTPLogged(b *testing.B) {
	s := newBenchSetup(b)
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	in := s.stubIngress(b, []string{"brig"}, log)
	runServeHTTP(b, in, s.cs, 256)
}

// BenchmarkServeHTTPNATS is ServeHTTP with the real dependencies: the
// discovery resolver (its answer cached) and bus.Exchange over an
// embedded NATS server to a component that answers with the body.
func BenchmarkServeHTTPNATS(b *testing.B) {
	s := newBenchSetup(b)
	dns := testbed.StartDNS(b)
	dns.SetSRV(benchOriginA, 3600, testbed.SRVRecord{Target: benchInfraA, Port: 443, Priority: 10, Weight: 5})
	res, err := discovery.New(discovery.Config{Servers: []string{dns.Addr()}, AllowPrivate: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = res.Close() })
	ns := startNATS(b)
	ingressNC, componentNC := connect(b, ns), connect(b, ns)
	sub, err := componentNC.Subscribe("fed.in.brig.>", func(m *nats.Msg) {
		_ = m.RespondMsg(bus.Event{ID: "r", Source: "/brig", Type: contract.TypeResponse, Data: m.Data}.Message(m.Reply))
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := componentNC.Flush(); err != nil {
		b.Fatal(err)
	}
	cfg := benchConfig([]string{"brig"})
	in, err := New(cfg, Deps{NATS: ingressNC, Resolver: res, Policy: s.pol, Certs: s.store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	runServeHTTP(b, in, s.cs, 256)
}

// BenchmarkServeHTTPMetrics is BenchmarkServeHTTP/256B with the metrics
// of a process recorded (origin listed): the cost of the metrics, against
// BenchmarkServeHTTP/256B in the same run.
func BenchmarkServeHTTPMetrics(b *testing.B) {
	s := newBenchSetup(b)
	in := s.stubIngress(b, []string{"brig", "galley", "cargohold"}, slog.New(slog.DiscardHandler))
	m := metrics.New([]string{"brig", "galley", "cargohold"})
	m.SetListed(func(d string) bool { return d == benchOriginA })
	in.metrics = m
	runServeHTTP(b, in, s.cs, 256)
}
