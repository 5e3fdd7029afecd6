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
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/test/testbed"
)

// ---- test CA -------------------------------------------------------------

// newCA returns a throw-away certificate authority.
func newCA(tb testing.TB, name string) *testbed.CA {
	tb.Helper()
	ca, err := testbed.NewCA(name)
	if err != nil {
		tb.Fatalf("new CA: %v", err)
	}
	return ca
}

// issue has ca issue a certificate for the DNS names.
func issue(tb testing.TB, ca *testbed.CA, o testbed.LeafOptions, dnsNames ...string) *testbed.Leaf {
	tb.Helper()
	l, err := ca.Issue(o, dnsNames...)
	if err != nil {
		tb.Fatalf("issue: %v", err)
	}
	return l
}

// ---- NATS ----------------------------------------------------------------

// startNATS runs an in-process NATS server on a random port of 127.0.0.1
// until the end of the test.
func startNATS(tb testing.TB) *server.Server {
	tb.Helper()
	s, err := testbed.StartNATS("")
	if err != nil {
		tb.Fatalf("nats server: %v", err)
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// connect opens a NATS connection closed at cleanup.
func connect(tb testing.TB, s *server.Server) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.NoReconnect())
	if err != nil {
		tb.Fatalf("nats connect: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// ---- logging ---------------------------------------------------------------

// testLogger sends logs to t.Log when -v, else discards them (always for
// a fuzz target, whose f.Log must not be called from the fuzz function).
func testLogger(tb testing.TB) *slog.Logger {
	tb.Helper()
	if _, fuzz := tb.(*testing.F); fuzz || !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

var logMu sync.Mutex

func (w tbWriter) Write(p []byte) (int, error) {
	logMu.Lock()
	defer logMu.Unlock()
	w.tb.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// ---- test environment ----------------------------------------------------

// Domains and infra names of the test world. Backend A (a.example.com) is
// hosted at fed.a-infra.example.net, backend C at fed.c-infra.example.net.
const (
	originA   = "a.example.com"
	infraA    = "fed.a-infra.example.net"
	originC   = "c.example.com"
	infraC    = "fed.c-infra.example.net"
	originW   = "w.example.com" // SRV target x.w-infra.example.net, cert *.w-infra.example.net
	infraW    = "x.w-infra.example.net"
	wildcardW = "*.w-infra.example.net"
	denied    = "denied.example.com" // has an SRV record, not in the allow list
	noSRV     = "nosrv.example.com"  // NXDOMAIN
	emptySRV  = "empty.example.com"  // the name exists without SRV records
	dotSRV    = "dot.example.com"    // SRV target "."
	servFail  = "servfail.example.com"
	dropped   = "slow.example.com" // queries never answered
)

// envOpts tunes newEnv.
type envOpts struct {
	maxBody    int64
	timeout    time.Duration
	components []string
	dnsDown    bool // point the resolver at a stopped DNS server

	// Protection and identity (zero: no origin limit, defaults).
	originRate        float64
	originBurst       int
	originConcurrency int
	certRate          float64
	certBurst         int
	certConcurrency   int
	authFailRate      float64
	authFailBurst     int
	allowAll          bool // the strategy allow-all instead of the allow list
	maxStreams        int
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
	identity          string
	requireDNSSEC     bool // the resolver trusts only answers with AD
	authenticDNS      bool // the DNS server sets AD
}

// env is a running ingress with NATS, DNS and certificates.
type env struct {
	ca       *testbed.CA
	dns      *testbed.DNS
	ns       *server.Server
	nc       *nats.Conn // the ingress's connection
	resolver *discovery.Resolver
	in       *Ingress
	base     string // https://127.0.0.1:port
	serveErr chan error

	certA, certC, certW *testbed.Leaf
	subjects            contract.Subjects
}

// newEnv starts an ingress serving on 127.0.0.1 with real TLS.
func newEnv(tb testing.TB, o envOpts) *env {
	tb.Helper()
	e := &env{ca: newCA(tb, "fedbus test CA")}
	e.certA = issue(tb, e.ca, testbed.LeafOptions{}, infraA)
	e.certC = issue(tb, e.ca, testbed.LeafOptions{}, infraC)
	e.certW = issue(tb, e.ca, testbed.LeafOptions{}, "unrelated.example.net", wildcardW)
	serverCert := issue(tb, e.ca, testbed.LeafOptions{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}, "fed.b-infra.example.net", "localhost")

	e.dns = testbed.StartDNS(tb)
	for domain, target := range map[string]string{originA: infraA, originC: infraC, originW: infraW, denied: infraA, dotSRV: "."} {
		e.dns.SetSRV(domain, 60, testbed.SRVRecord{Target: target, Port: 443, Priority: 10, Weight: 5})
	}
	e.dns.SetSRV(emptySRV, 60)
	e.dns.SetFailure(servFail, 2) // SERVFAIL
	e.dns.SetFailure(dropped, testbed.DropQuery)
	e.dns.SetAuthenticData(o.authenticDNS)
	dnsAddr := e.dns.Addr()
	if o.dnsDown {
		if err := e.dns.Stop(); err != nil {
			tb.Fatalf("stop dns: %v", err)
		}
	}
	log := testLogger(tb)
	resolver, err := discovery.New(discovery.Config{Servers: []string{dnsAddr}, AllowPrivate: true, Logger: log, QueryTimeout: time.Second, RequireDNSSEC: o.requireDNSSEC})
	if err != nil {
		tb.Fatalf("resolver: %v", err)
	}
	tb.Cleanup(func() { _ = resolver.Close() })
	e.resolver = resolver

	e.ns = startNATS(tb)
	e.nc = connect(tb, e.ns)
	strategy := contract.AllowList
	if o.allowAll {
		strategy = contract.AllowAll
	}
	pol, err := policy.New(strategy, []string{originA, originC, originW, noSRV, emptySRV, dotSRV, servFail, dropped})
	if err != nil {
		tb.Fatalf("policy: %v", err)
	}
	// The defaults, but for the options set; origin, certificate and
	// failed-authentication limits are off unless set (they have tests of
	// their own).
	cfg := NewConfig()
	cfg.Domain, cfg.Components, cfg.RequireDNSSEC, cfg.Addr = "b.example.com", o.components, o.requireDNSSEC, "127.0.0.1:0"
	cfg.OriginRate, cfg.OriginBurst, cfg.OriginConcurrency = o.originRate, o.originBurst, o.originConcurrency
	cfg.CertRate, cfg.CertBurst, cfg.CertConcurrency = o.certRate, o.certBurst, o.certConcurrency
	cfg.AuthFailureRate, cfg.AuthFailureBurst = o.authFailRate, o.authFailBurst
	for _, o := range []struct {
		field *time.Duration
		set   time.Duration
	}{{&cfg.RequestTimeout, o.timeout}, {&cfg.ReadHeaderTimeout, o.readHeaderTimeout}, {&cfg.IdleTimeout, o.idleTimeout}} {
		if o.set != 0 {
			*o.field = o.set
		}
	}
	if o.identity != "" {
		cfg.Identity = o.identity
	}
	if o.maxBody != 0 {
		cfg.MaxBodyBytes = o.maxBody
	}
	if o.maxStreams != 0 {
		cfg.MaxStreams = o.maxStreams
	}
	if cfg.Components == nil {
		cfg.Components = []string{"brig", "galley", "cargohold", "spar"}
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	e.subjects, err = contract.NewSubjects("fed")
	if err != nil {
		tb.Fatalf("subjects: %v", err)
	}
	e.in, err = New(cfg, Deps{NATS: e.nc, Resolver: resolver, Policy: pol, Certs: e.ca.CertStore(tb, serverCert), Logger: log})
	if err != nil {
		tb.Fatalf("new ingress: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	e.serveErr = make(chan error, 1)
	go func() { e.serveErr <- e.in.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.in.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		if err := within(tb, e.serveErr, "Serve to return"); !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("serve returned %v, want http.ErrServerClosed", err)
		}
	})
	e.base = "https://" + ln.Addr().String()
	return e
}

// clientTLS returns the TLS configuration of a client of the ingress that
// presents cert (none when nil) and trusts the CA.
func (e *env) clientTLS(tb testing.TB, cert *testbed.Leaf) *tls.Config {
	tb.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(e.ca.Cert)
	cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
	if cert != nil {
		c, err := cert.TLSCertificate()
		if err != nil {
			tb.Fatalf("client certificate: %v", err)
		}
		// Always present the certificate, even when the server's list of
		// acceptable CAs does not name its issuer.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return cfg
}

// client returns an HTTP client presenting cert (none when nil) that
// speaks HTTP/2 (or only HTTP/1.1 when http1 is set) and trusts the CA.
func (e *env) client(tb testing.TB, cert *testbed.Leaf, http1 bool) *http.Client {
	tb.Helper()
	cfg := e.clientTLS(tb, cert)
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: !http1}
	if http1 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// call describes one request to the ingress.
type call struct {
	method string // POST when empty
	path   string
	header http.Header
	body   io.Reader
	length int64 // ContentLength; -1 for unknown, 0 for len of a bytes.Reader
}

// do sends c with client and returns the response and its body.
func (e *env) do(tb testing.TB, client *http.Client, c call) (*http.Response, []byte, error) {
	tb.Helper()
	method := c.method
	if method == "" {
		method = http.MethodPost
	}
	body := c.body
	if body == nil && method == http.MethodPost {
		body = bytes.NewReader([]byte(`{}`))
	}
	req, err := http.NewRequest(method, e.base+c.path, body)
	if err != nil {
		return nil, nil, fmt.Errorf("new request %s %s: %w", method, c.path, err)
	}
	if c.length != 0 {
		req.ContentLength = c.length
	}
	for k, vs := range c.header {
		req.Header[k] = vs
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("read response: %w", err)
	}
	return resp, b, nil
}

// mustDo is do failing tb on a transport error.
func (e *env) mustDo(tb testing.TB, client *http.Client, c call) (*http.Response, []byte) {
	tb.Helper()
	resp, body, err := e.do(tb, client, c)
	if err != nil {
		tb.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	return resp, body
}

// origin returns a header with Wire-Origin-Domain.
func origin(domain string) http.Header {
	return http.Header{contract.HTTPOriginDomain: {domain}}
}

// with returns h plus one header.
func with(h http.Header, key string, values ...string) http.Header {
	out := h.Clone()
	if out == nil {
		out = http.Header{}
	}
	out[http.CanonicalHeaderKey(key)] = values
	return out
}

// wantError checks a contract error response.
func wantError(tb testing.TB, resp *http.Response, body []byte, status int, label string) *contract.Error {
	tb.Helper()
	if resp.StatusCode != status {
		tb.Errorf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		tb.Errorf("Content-Type %q, want application/json", ct)
	}
	var e contract.Error
	if err := json.Unmarshal(body, &e); err != nil {
		tb.Fatalf("error body %q is not JSON: %v", body, err)
	}
	if e.Label != label || e.Code != status || e.Message == "" {
		tb.Errorf("error body %s, want label %s code %d and a message", body, label, status)
	}
	return &e
}

// ---- NATS observers and components ----------------------------------------

// busWatch counts the messages published under fed.in.> on the ingress's
// own connection; a sentinel published on that connection after a request
// orders them (NATS keeps one connection's messages in order).
type busWatch struct {
	nc        *nats.Conn
	count     atomic.Int64
	sentinels chan string
}

const sentinelSubject = "fed.in.zz-sentinel.check.sentinel.test"

// watchBus subscribes to fed.in.> until the end of the test. Note that the
// subscription makes every fed.in subject have a responder.
func (e *env) watchBus(tb testing.TB) *busWatch {
	tb.Helper()
	w := &busWatch{nc: e.nc, sentinels: make(chan string, 16)}
	sub, err := e.nc.Subscribe("fed.in.>", func(m *nats.Msg) {
		if m.Subject == sentinelSubject {
			w.sentinels <- string(m.Data)
			return
		}
		w.count.Add(1)
	})
	if err != nil {
		tb.Fatalf("subscribe: %v", err)
	}
	tb.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := e.nc.Flush(); err != nil {
		tb.Fatalf("flush: %v", err)
	}
	return w
}

// published returns how many requests reached the bus before now.
func (w *busWatch) published(tb testing.TB) int64 {
	tb.Helper()
	id := bus.NewID()
	if err := w.nc.Publish(sentinelSubject, []byte(id)); err != nil {
		tb.Fatalf("publish sentinel: %v", err)
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got := <-w.sentinels:
			if got == id {
				return w.count.Load()
			}
		case <-timeout:
			tb.Fatalf("sentinel not received")
		}
	}
}

// captured is one request message a raw component received.
type captured struct {
	subject string
	header  nats.Header
	data    []byte
}

// serveRaw subscribes a raw component in its queue group; reply decides
// the answer to each message (nil: no answer at all). The messages are sent
// to the returned channel.
func (e *env) serveRaw(tb testing.TB, component string, reply func(m *nats.Msg) *bus.Event) <-chan captured {
	tb.Helper()
	nc := connect(tb, e.ns)
	ch := make(chan captured, 64)
	subject, err := e.subjects.InComponent(component)
	if err != nil {
		tb.Fatalf("subject: %v", err)
	}
	_, err = nc.QueueSubscribe(subject, component, func(m *nats.Msg) {
		select {
		case ch <- captured{subject: m.Subject, header: m.Header, data: m.Data}:
		default:
		}
		if ev := reply(m); ev != nil {
			_ = m.RespondMsg(ev.Message(m.Reply))
		}
	})
	if err != nil {
		tb.Fatalf("subscribe: %v", err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatalf("flush: %v", err)
	}
	return ch
}

// serveEcho serves brig with bus.Serve: it answers with the request as the
// component sees it.
func (e *env) serveEcho(tb testing.TB) {
	tb.Helper()
	nc := connect(tb, e.ns)
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := bus.Serve(ctx, nc, e.subjects, "brig", func(_ context.Context, r *bus.Request) ([]byte, error) {
		return json.Marshal(echo{ID: r.ID, Origin: r.Origin, Component: r.Component, RPC: r.RPC, TraceParent: r.TraceParent, Body: string(r.Body)})
	}, testLogger(tb))
	if err != nil {
		tb.Fatalf("bus.Serve: %v", err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatalf("flush: %v", err)
	}
	tb.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = srv.Shutdown(sctx)
		cancel()
	})
}

// echo is the answer of serveEcho.
type echo struct {
	ID          string `json:"id"`
	Origin      string `json:"origin"`
	Component   string `json:"component"`
	RPC         string `json:"rpc"`
	TraceParent string `json:"traceparent"`
	Body        string `json:"body"`
}

// response is a fedbus.response event answering m with body.
func response(body string) *bus.Event {
	return &bus.Event{ID: bus.NewID(), Source: "/test", Type: contract.TypeResponse, DataContentType: contract.ContentTypeJSON, Data: []byte(body)}
}

// errorReply is a fedbus.error event with e's body.
func errorReply(e *contract.Error) *bus.Event {
	ev := bus.ErrorReply(false, "/test", e)
	return &ev
}

// recv waits for a captured message.
func recv(tb testing.TB, ch <-chan captured) captured {
	tb.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second):
		tb.Fatalf("no message reached the component")
		return captured{}
	}
}

// within receives from ch, failing tb after 15 seconds.
func within[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(15 * time.Second):
		tb.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

// describe formats a response for failure messages.
func describe(resp *http.Response, body []byte) string {
	return fmt.Sprintf("%d %s", resp.StatusCode, body)
}
