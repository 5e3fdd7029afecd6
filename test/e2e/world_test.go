package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// world is two (or more) backends sharing a DNS server and a CA.
type world struct {
	ca   *testbed.CA
	dns  *testbed.DNS
	dir  string
	a, b *fedtest.Backend
}

const (
	domainA = "a.example.com"
	domainB = "b.example.com"
	domainC = "c.example.com"
	infraA  = "fed.a-infra.example.net"
	infraB  = "fed.b-infra.example.net"
	infraC  = "fed.c-infra.example.net"
)

func testLogger(tb testing.TB) *slog.Logger {
	tb.Helper()
	if os.Getenv("FEDBUS_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startBackend starts a backend and closes it with the test.
func startBackend(tb testing.TB, opts fedtest.BackendOptions) *fedtest.Backend {
	tb.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(tb)
	}
	if opts.Env == nil {
		// The load tests send far more than one origin's (and one
		// certificate's) default rate and concurrency; the limits have
		// tests of their own.
		opts.Env = map[string]string{"FED_INGRESS_ORIGIN_RATE": "0", "FED_INGRESS_ORIGIN_CONCURRENCY": "0", "FED_INGRESS_CERT_RATE": "0", "FED_INGRESS_CERT_CONCURRENCY": "0"}
	}
	be, err := fedtest.StartBackend(opts)
	if err != nil {
		tb.Fatalf("start backend %s: %v", opts.Domain, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := be.Close(ctx); err != nil {
			tb.Errorf("close backend %s: %v", opts.Domain, err)
		}
	})
	return be
}

// newWorld starts A and B; A allows B (and the extra domains), B allows A.
func newWorld(tb testing.TB, extraAllowA ...string) *world {
	tb.Helper()
	return newWorldWith(tb, fedtest.BackendOptions{}, fedtest.BackendOptions{}, extraAllowA...)
}

// newWorldWith is newWorld with more options of A and B (their domain,
// infrastructure host, CA, DNS, directory, strategy and allow list are
// set here).
func newWorldWith(tb testing.TB, optsA, optsB fedtest.BackendOptions, extraAllowA ...string) *world {
	tb.Helper()
	ca, err := testbed.NewCA("e2e CA")
	if err != nil {
		tb.Fatal(err)
	}
	w := &world{ca: ca, dns: testbed.StartDNS(tb), dir: tb.TempDir()}
	optsA.Domain, optsA.InfraHost, optsA.CA, optsA.DNS, optsA.Dir = domainA, infraA, ca, w.dns, w.dir
	optsA.Strategy, optsA.AllowList = "allow-list", append([]string{domainB}, extraAllowA...)
	w.a = startBackend(tb, optsA)
	optsB.Domain, optsB.InfraHost, optsB.CA, optsB.DNS, optsB.Dir = domainB, infraB, ca, w.dns, w.dir
	optsB.Strategy, optsB.AllowList = "allow-list", []string{domainA}
	w.b = startBackend(tb, optsB)
	return w
}

// serve runs handler for component on a backend until the test ends.
func serve(tb testing.TB, be *fedtest.Backend, component string, h bus.Handler) {
	tb.Helper()
	serveOn(tb, be.NATS, be.Subjects, component, h)
}

// serveOn runs handler for component on nc until the test ends.
func serveOn(tb testing.TB, nc *nats.Conn, subjects contract.Subjects, component string, h bus.Handler, opts ...bus.ServeOption) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := bus.Serve(ctx, nc, subjects, component, h, testLogger(tb), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		_ = srv.Shutdown(sctx)
		cancel()
	})
}

// component is the stand-in component: echo, whoami (returns the origin),
// slow (sleeps the milliseconds in the body, honouring ctx), fail.
func component(ctx context.Context, req *bus.Request) ([]byte, error) {
	switch req.RPC {
	case "echo":
		return req.Body, nil
	case "whoami":
		return json.Marshal(map[string]string{"origin": req.Origin, "id": req.ID, "rpc": req.RPC})
	case "slow":
		ms, _ := strconv.Atoi(string(req.Body))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return []byte(`"done"`), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case "fail":
		return nil, &contract.Error{Code: 404, Label: "not-found", Message: "no such thing"}
	default:
		return nil, contract.Errorf(contract.LabelInvalidEndpoint, "unknown rpc %s", req.RPC)
	}
}

// rawClient is an HTTPS client with a given certificate (nil: none) that
// trusts the world's CA.
func (w *world) rawClient(tb testing.TB, cert *tls.Certificate) *http.Client {
	tb.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(w.ca.CertPEM)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13, ServerName: infraB}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// leaf issues a certificate from ca for names.
func leaf(tb testing.TB, ca *testbed.CA, names ...string) *tls.Certificate {
	tb.Helper()
	l, err := ca.Issue(testbed.LeafOptions{}, names...)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := l.TLSCertificate()
	if err != nil {
		tb.Fatal(err)
	}
	return &c
}

// closedPort returns a loopback port with nothing listening.
func closedPort(tb testing.TB) uint16 {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return uint16(port)
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
