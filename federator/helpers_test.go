package federator

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/test/testbed"
)

// testFederatorOptions configure newTestFederator.
type testFederatorOptions struct {
	transport     http.RoundTripper // the remote ingresses
	targets       []string          // allowed and in DNS; default benchTarget
	requireDNSSEC bool              // FED_REQUIRE_DNSSEC
	logger        *slog.Logger      // default: discarded
	now           func() time.Time  // Deps.Now
	allowSelf     bool              // FED_ALLOW_SELF_CALLS
	natsURL       string            // a NATS server to use (default: an embedded one of its own)
}

// testFederator is a federator of benchOrigin and what it runs on.
type testFederator struct {
	f   *Federator
	nc  *nats.Conn
	dns *testbed.DNS
}

// newTestFederator returns a federator of benchOrigin, not started, whose
// remote calls go to o.transport, with each target's SRV record (pointing
// at benchInfraB:443) in a testbed DNS, and a NATS connection to an
// embedded server.
func newTestFederator(tb testing.TB, o testFederatorOptions) testFederator {
	tb.Helper()
	if len(o.targets) == 0 {
		o.targets = []string{benchTarget}
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	ca, err := testbed.NewCA("bench CA")
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := ca.Issue(testbed.LeafOptions{}, "fed.a-infra.example.net")
	if err != nil {
		tb.Fatal(err)
	}
	store := ca.CertStore(tb, leaf)
	dns := testbed.StartDNS(tb)
	for _, target := range o.targets {
		dns.SetSRV(target, 3600, testbed.SRVRecord{Target: benchInfraB, Port: 443, Priority: 10, Weight: 5})
	}
	res, err := discovery.New(discovery.Config{Servers: []string{dns.Addr()}, AllowPrivate: true, RequireDNSSEC: o.requireDNSSEC, Logger: o.logger})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = res.Close() })
	pol, err := policy.New("allow-list", o.targets)
	if err != nil {
		tb.Fatal(err)
	}
	if o.natsURL == "" {
		ns, err := testbed.StartNATS("")
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		o.natsURL = ns.ClientURL()
	}
	nc, err := nats.Connect(o.natsURL)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	cfg := NewConfig()
	cfg.Domain, cfg.Strategy, cfg.AllowList, cfg.RequireDNSSEC = benchOrigin, contract.AllowList, o.targets, o.requireDNSSEC
	cfg.AllowSelfCalls = o.allowSelf
	f, err := New(cfg, Deps{NATS: nc, Resolver: res, Policy: pol, Certs: store, Logger: o.logger, Now: o.now})
	if err != nil {
		tb.Fatal(err)
	}
	f.client.client.Transport = o.transport
	return testFederator{f: f, nc: nc, dns: dns}
}

// stubRemote is a RoundTripper standing for the remote ingresses: it
// answers every request with the status and headers last set (200 with
// the body "ok" until then; an error status with a too-many-requests
// body) and counts the requests it was sent.
type stubRemote struct {
	calls atomic.Int32

	mu     sync.Mutex
	status int
	header http.Header
}

// answer makes the stub answer status with header from now on.
func (s *stubRemote) answer(status int, header http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.header = status, header
}

// RoundTrip implements http.RoundTripper.
func (s *stubRemote) RoundTrip(req *http.Request) (*http.Response, error) {
	s.calls.Add(1)
	s.mu.Lock()
	status, header := s.status, s.header.Clone()
	s.mu.Unlock()
	if status == 0 {
		status = http.StatusOK
	}
	if header == nil {
		header = http.Header{}
	}
	header.Set(contract.HTTPContentType, contract.ContentTypeJSON)
	body := []byte(`"ok"`)
	if status != http.StatusOK {
		body = contract.Errorf(contract.LabelTooManyRequests, "stub over its limit").JSON()
	}
	return &http.Response{
		StatusCode: status, Proto: "HTTP/2.0", ProtoMajor: 2, Header: header,
		Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)), Request: req,
	}, nil
}

// call sends one request for brig.echo on target through f.call (policy,
// backoff, discovery and the remote) and returns its outcome.
func call(tb testing.TB, f *Federator, target, id string) ([]byte, error) {
	tb.Helper()
	subject, err := f.subjects.Out("brig", "echo", target)
	if err != nil {
		tb.Fatal(err)
	}
	route, err := f.subjects.ParseOut(subject)
	if err != nil {
		tb.Fatal(err)
	}
	ev := bus.Event{ID: id, Source: "/brig", Type: contract.TypeRequest, Data: []byte(`{}`)}
	a, err := f.call(context.Background(), route, ev)
	if err != nil {
		return nil, err
	}
	return a.body, nil
}

// startJetStream starts a NATS server with JetStream on file storage for
// the test and returns its URL and a client connection with its
// JetStream API, all closed at the end of the test.
func startJetStream(tb testing.TB) (url string, nc *nats.Conn, js jetstream.JetStream) {
	tb.Helper()
	ns, err := testbed.StartNATS(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err = nats.Connect(ns.ClientURL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err = jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return ns.ClientURL(), nc, js
}

// sendRequests has f handle n requests of brig's echo to benchTarget.
func sendRequests(tb testing.TB, f *Federator, n int) {
	tb.Helper()
	subject, err := f.subjects.Out("brig", "echo", benchTarget)
	if err != nil {
		tb.Fatal(err)
	}
	for range n {
		f.handle(context.Background(), subject, bus.Event{ID: bus.NewID(), Source: "/brig", Type: contract.TypeRequest, Data: []byte(`{}`)})
	}
}
