package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

func TestRoundTripBothWays(t *testing.T) {
	w := newWorld(t)
	serve(t, w.a, "galley", component)
	serve(t, w.b, "brig", component)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	call := func(from *fedtest.Backend, target, comp string, i int) {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		body := []byte(fmt.Sprintf(`{"n":%d}`, i))
		got, err := from.Client("/test").Call(ctx, target, comp, "echo", body)
		if err != nil {
			errs <- fmt.Errorf("%s → %s: %w", from.Domain, target, err)
			return
		}
		if !bytes.Equal(got, body) {
			errs <- fmt.Errorf("%s → %s: got %s, want %s", from.Domain, target, got, body)
		}
	}
	for i := range n {
		wg.Add(2)
		go call(w.a, domainB, "brig", i)
		go call(w.b, domainA, "galley", i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestComponentSeesVerifiedOriginAndRequestID(t *testing.T) {
	w := newWorld(t)
	serve(t, w.b, "brig", component)
	got, err := w.a.Client("/brig").Call(context.Background(), domainB, "brig", "whoami", []byte(`{}`), bus.WithID("req-42"))
	if err != nil {
		t.Fatal(err)
	}
	var who map[string]string
	if err := json.Unmarshal(got, &who); err != nil {
		t.Fatal(err)
	}
	if who["origin"] != domainA || who["id"] != "req-42" {
		t.Fatalf("component saw %v, want origin %s and id req-42", who, domainA)
	}
}

// labelCase is one federated call that must fail with a label (and, for
// remote errors, an inner label).
type labelCase struct {
	name      string
	target    string
	comp, rpc string
	body      []byte
	timeout   time.Duration
	label     string
	inner     string
}

func TestErrorLabelsThroughTheFederator(t *testing.T) {
	w := newWorld(t, domainC, "nosrv.example.com", "dot.example.com", "closed.example.com",
		"untrusted.example.com", "private.example.com", "servfail.example.com")
	serve(t, w.b, "brig", component)

	// Backend C is trusted and allows everybody, but B does not allow C.
	c := startBackend(t, fedtest.BackendOptions{Domain: domainC, InfraHost: infraC, CA: w.ca, DNS: w.dns, Dir: w.dir, Strategy: "allow-all", RequestTimeout: 3 * time.Second})
	serve(t, c, "brig", component)

	w.dns.SetSRV("dot.example.com", 60, testbed.SRVRecord{Target: ".", Port: 0})
	w.dns.SetSRV("closed.example.com", 60, testbed.SRVRecord{Target: "closed.infra.test", Port: closedPort(t), Priority: 1, Weight: 1})
	mustSetA(t, w.dns, "closed.infra.test", "127.0.0.1")
	w.dns.SetFailure(testbed.SRVName("servfail.example.com"), 2) // SERVFAIL

	// A remote whose server certificate comes from a CA that A does not trust.
	otherCA, err := testbed.NewCA("untrusted CA")
	if err != nil {
		t.Fatal(err)
	}
	untrusted := tlsServer(t, leaf(t, otherCA, "untrusted.infra.test"))
	w.dns.SetSRV("untrusted.example.com", 60, testbed.SRVRecord{Target: "untrusted.infra.test", Port: untrusted, Priority: 1, Weight: 1})
	mustSetA(t, w.dns, "untrusted.infra.test", "127.0.0.1")

	cases := []labelCase{
		{name: "target not allowed", target: "denied.example.com", comp: "brig", rpc: "echo", label: contract.LabelFederationDenied},
		{name: "no SRV record", target: "nosrv.example.com", comp: "brig", rpc: "echo", label: contract.LabelInvalidDomain},
		{name: "SRV target dot", target: "dot.example.com", comp: "brig", rpc: "echo", label: contract.LabelInvalidDomain},
		{name: "DNS server failure", target: "servfail.example.com", comp: "brig", rpc: "echo", label: contract.LabelDiscoveryFailure},
		{name: "remote port closed", target: "closed.example.com", comp: "brig", rpc: "echo", label: contract.LabelConnectionRefused},
		{name: "remote certificate untrusted", target: "untrusted.example.com", comp: "brig", rpc: "echo", label: contract.LabelTLSError},
		{name: "component not federated", target: domainB, comp: "spar", rpc: "echo", label: contract.LabelUnknownComponent},
		{name: "remote component not served", target: domainB, comp: "galley", rpc: "echo", label: contract.LabelRemoteError, inner: contract.LabelComponentUnavailable},
		{name: "remote component too slow", target: domainB, comp: "brig", rpc: "slow", body: []byte("3000"), timeout: 300 * time.Millisecond, label: contract.LabelTimeout},
		// Larger than a NATS message: refused when the component
		// publishes it (TestOverSizeAnsweredAtOnce has the other sizes).
		{name: "body too large", target: domainB, comp: "brig", rpc: "echo", body: bytes.Repeat([]byte("x"), 2<<20), label: contract.LabelPayloadTooLarge},
		{name: "body over the remote's FED_MAX_BODY_BYTES", target: domainB, comp: "brig", rpc: "echo", body: bytes.Repeat([]byte("x"), overIngressLimit), label: contract.LabelRemoteError, inner: contract.LabelPayloadTooLarge},
		{name: "remote component error", target: domainB, comp: "brig", rpc: "fail", label: contract.LabelRemoteError, inner: "not-found"},
		{name: "star token", target: domainB, comp: "brig", rpc: "*", label: contract.LabelInvalidEndpoint},
		{name: "gt token", target: domainB, comp: "brig", rpc: ">", label: contract.LabelInvalidEndpoint},
		{name: "space in rpc", target: domainB, comp: "brig", rpc: "a b", label: contract.LabelInvalidEndpoint},
		{name: "upper case component", target: domainB, comp: "BRIG", rpc: "echo", label: contract.LabelInvalidEndpoint},
		{name: "double dot domain", target: "b..example.com", comp: "brig", rpc: "echo", label: contract.LabelDomainParseError},
		{name: "star domain", target: "*.example.com", comp: "brig", rpc: "echo", label: contract.LabelDomainParseError},
		{name: "300 character domain", target: strings.Repeat("a", 60) + "." + strings.Repeat("b.", 120) + "com", comp: "brig", rpc: "echo", label: contract.LabelDomainParseError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			expectLabel(t, w.a, tc)
		})
	}
	t.Run("origin not allowed by the remote", func(t *testing.T) {
		expectLabel(t, c, labelCase{target: domainB, comp: "brig", rpc: "echo", label: contract.LabelRemoteError, inner: contract.LabelFederationDenied})
	})
	t.Run("upper case domain is normalised", func(t *testing.T) {
		got, err := w.a.Client("/t").Call(context.Background(), "B.Example.COM", "brig", "echo", []byte(`1`))
		if err != nil || string(got) != "1" {
			t.Fatalf("got %q, %v", got, err)
		}
	})
}

func TestDNSServerDown(t *testing.T) {
	ca, err := testbed.NewCA("e2e CA")
	if err != nil {
		t.Fatal(err)
	}
	dns := testbed.StartDNS(t)
	a := startBackend(t, fedtest.BackendOptions{Domain: domainA, InfraHost: infraA, CA: ca, DNS: dns, Dir: t.TempDir(), Strategy: "allow-all", RequestTimeout: 8 * time.Second})
	if err := dns.Stop(); err != nil {
		t.Fatal(err)
	}
	expectLabel(t, a, labelCase{target: domainB, comp: "brig", rpc: "echo", label: contract.LabelDiscoveryFailure})
}

func TestUntrustedClientCertificate(t *testing.T) {
	w := newWorld(t)
	serve(t, w.b, "brig", component)
	// Backend E trusts the world's CA but holds a certificate of another CA.
	otherCA, err := testbed.NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	e := startBackend(t, fedtest.BackendOptions{Domain: "e.example.com", InfraHost: "fed.e-infra.example.net", CA: otherCA, DNS: w.dns, Dir: t.TempDir(), Strategy: "allow-all",
		TrustPEM: append(append([]byte{}, w.ca.CertPEM...), otherCA.CertPEM...)})
	expectLabel(t, e, labelCase{target: domainB, comp: "brig", rpc: "echo", label: contract.LabelTLSError})
}

func expectLabel(t *testing.T, from *fedtest.Backend, tc labelCase) {
	t.Helper()
	timeout := tc.timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	body := tc.body
	if body == nil {
		body = []byte(`{}`)
	}
	_, err := from.Client("/test").Call(ctx, tc.target, tc.comp, tc.rpc, body)
	var fe *contract.Error
	if !errors.As(err, &fe) {
		t.Fatalf("got %v, want a *contract.Error %s", err, tc.label)
	}
	if fe.Label != tc.label || fe.Code != contract.StatusOf(tc.label) {
		t.Fatalf("got %s, want label %s (%d)", fe, tc.label, contract.StatusOf(tc.label))
	}
	if tc.inner != "" && (fe.Inner == nil || fe.Inner.Label != tc.inner) {
		t.Fatalf("got %s, want inner label %s", fe, tc.inner)
	}
}

// TestIngressRefusesHostilePeers drives B's ingress directly over HTTPS.
func TestIngressRefusesHostilePeers(t *testing.T) {
	w := newWorld(t)
	var published sync.Map
	sub, err := w.b.NATS.Subscribe("fed.in.>", func(m *nats.Msg) { published.Store(m.Header.Get(contract.HeaderID), true) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	serve(t, w.b, "brig", component)
	certA := leaf(t, w.ca, infraA)
	certC := leaf(t, w.ca, infraC) // valid, trusted, but C's
	w.dns.SetSRV(domainC, 60, testbed.SRVRecord{Target: infraC, Port: 1, Priority: 1, Weight: 1})
	url := "https://" + w.b.IngressAddr

	type httpCase struct {
		name   string
		cert   *tls.Certificate
		method string
		path   string
		origin string
		status int
		label  string
	}
	cases := []httpCase{
		{name: "success", cert: certA, path: "/federation/brig/echo", origin: domainA, status: 200},
		{name: "no client certificate", cert: nil, path: "/federation/brig/echo", origin: domainA, status: 403, label: contract.LabelNoClientCertificate},
		{name: "origin spoofing: C's certificate claiming A", cert: certC, path: "/federation/brig/echo", origin: domainA, status: 403, label: contract.LabelAuthenticationFailure},
		{name: "GET", cert: certA, method: http.MethodGet, path: "/federation/brig/echo", origin: domainA, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "query string", cert: certA, path: "/federation/brig/echo?x=1", origin: domainA, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "star rpc", cert: certA, path: "/federation/brig/*", origin: domainA, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "gt rpc", cert: certA, path: "/federation/brig/%3E", origin: domainA, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "space rpc", cert: certA, path: "/federation/brig/a%20b", origin: domainA, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "dot dot", cert: certA, path: "/federation/brig/../echo", origin: domainA, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "upper case component", cert: certA, path: "/federation/BRIG/echo", origin: domainA, status: 403, label: contract.LabelInvalidEndpoint},
		{name: "unknown component", cert: certA, path: "/federation/spar/echo", origin: domainA, status: 403, label: contract.LabelUnknownComponent},
		{name: "no origin", cert: certA, path: "/federation/brig/echo", origin: "", status: 403, label: contract.LabelNoOriginDomain},
		{name: "origin star", cert: certA, path: "/federation/brig/echo", origin: "*.example.com", status: 403, label: contract.LabelDomainParseError},
		{name: "origin gt", cert: certA, path: "/federation/brig/echo", origin: ">", status: 403, label: contract.LabelDomainParseError},
		{name: "origin double dot", cert: certA, path: "/federation/brig/echo", origin: "a..example.com", status: 403, label: contract.LabelDomainParseError},
		{name: "origin with space", cert: certA, path: "/federation/brig/echo", origin: "a example.com", status: 403, label: contract.LabelDomainParseError},
		{name: "origin 300 characters", cert: certA, path: "/federation/brig/echo", origin: strings.Repeat("a.", 150) + "com", status: 403, label: contract.LabelDomainParseError},
		{name: "origin not allowed", cert: certC, path: "/federation/brig/echo", origin: domainC, status: 400, label: contract.LabelFederationDenied},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			req, err := http.NewRequest(method, url+tc.path, strings.NewReader(`{"x":1}`))
			if err != nil {
				t.Fatal(err)
			}
			if tc.path == "/federation/brig/../echo" {
				req.URL.Opaque = "//" + w.b.IngressAddr + tc.path // keep the dots
			}
			if tc.origin != "" {
				req.Header.Set(contract.HTTPOriginDomain, tc.origin)
			}
			id := "hostile-" + strings.ReplaceAll(tc.name, " ", "-")
			req.Header.Set(contract.HTTPRequestID, id)
			resp, err := w.rawClient(t, tc.cert).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.status)
			}
			if resp.ProtoMajor != 2 {
				t.Errorf("protocol %s, want HTTP/2", resp.Proto)
			}
			if tc.label == "" {
				return
			}
			var e contract.Error
			if err := json.Unmarshal(body, &e); err != nil || e.Label != tc.label {
				t.Fatalf("body %s, want label %s", body, tc.label)
			}
			// Nothing refused may reach the bus: flush both sides and check.
			if err := w.b.NATS.Flush(); err != nil {
				t.Fatal(err)
			}
			if _, ok := published.Load(id); ok {
				t.Fatalf("refused request %s reached the bus", id)
			}
		})
	}
}

// tlsServer serves HTTPS with cert on loopback and returns its port.
func tlsServer(tb testing.TB, cert *tls.Certificate) uint16 {
	tb.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*cert}})
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(200) }), ReadHeaderTimeout: time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	tb.Cleanup(func() { _ = srv.Close(); <-done })
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func mustSetA(tb testing.TB, d *testbed.DNS, host string, ips ...string) {
	tb.Helper()
	if err := d.SetA(host, 60, ips...); err != nil {
		tb.Fatal(err)
	}
}

// TestSlowRemoteCannotTakeEveryWorker fills the per-remote limit with calls
// to a slow remote: more calls to it get too-many-requests at once, and
// calls to another remote still succeed.
func TestSlowRemoteCannotTakeEveryWorker(t *testing.T) {
	w := newWorld(t, domainC)
	serve(t, w.b, "brig", component)
	c := startBackend(t, fedtest.BackendOptions{Domain: domainC, InfraHost: infraC, CA: w.ca, DNS: w.dns, Dir: w.dir, Strategy: "allow-all"})
	var started atomic.Int32
	release := make(chan struct{})
	serve(t, c, "brig", func(ctx context.Context, req *bus.Request) ([]byte, error) {
		started.Add(1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return []byte(`"slow"`), nil
	})
	const limit = 5
	for _, f := range w.a.Federators {
		f.SetMaxPerRemote(limit)
	}
	var inFlight sync.WaitGroup
	for range limit {
		inFlight.Add(1)
		go func() {
			defer inFlight.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, _ = w.a.Client("/t").Call(ctx, domainC, "brig", "slow", []byte(`0`))
		}()
	}
	t.Cleanup(func() { close(release); inFlight.Wait() })
	waitFor(t, 5*time.Second, "the slow calls to reach C", func() bool { return started.Load() == limit })
	_, err := w.a.Client("/t").Call(context.Background(), domainC, "brig", "echo", []byte(`1`))
	if !errors.Is(err, contract.ErrTooManyRequests) {
		t.Fatalf("call over the limit: got %v, want too-many-requests", err)
	}
	if got, err := w.a.Client("/t").Call(context.Background(), domainB, "brig", "echo", []byte(`2`)); err != nil || string(got) != "2" {
		t.Fatalf("call to B while C is saturated: %q, %v", got, err)
	}
}

// TestDiscoveryDoesNotHammerDNS sends 10,000 federated requests A → B
// within the TTL and counts what the DNS server received: one SRV query
// for B (A's federator) and one for A (B's ingress checking the origin),
// plus the address queries of B's SRV target.
func TestDiscoveryDoesNotHammerDNS(t *testing.T) {
	w := newWorld(t)
	serve(t, w.b, "brig", component)
	const total, workers = 10000, 32
	var wg sync.WaitGroup
	var failed atomic.Int32
	start := time.Now()
	for i := range workers {
		wg.Go(func() {
			for j := i; j < total; j += workers {
				if _, err := w.a.Client("/t").Call(context.Background(), domainB, "brig", "echo", []byte(`1`)); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d calls failed", failed.Load(), total)
	}
	srvB := w.dns.Queries(domainB, dns.TypeSRV)
	srvA := w.dns.Queries(domainA, dns.TypeSRV)
	addrB := w.dns.Queries(infraB, dns.TypeA) + w.dns.Queries(infraB, dns.TypeAAAA)
	t.Logf("%d requests: %d SRV queries for %s, %d for %s, %d address queries for %s, %d queries in all",
		total, srvB, domainB, srvA, domainA, addrB, infraB, w.dns.TotalQueries())
	// One query per name, plus one background refresh per 80% of the
	// records' 60 s TTL that the run lasted (a slow machine can take that
	// long for 10,000 calls).
	refreshes := int(time.Since(start) / (48 * time.Second))
	if srvB > 1+refreshes || srvA > 1+refreshes {
		t.Fatalf("SRV queries: %d for %s, %d for %s; want %d each", srvB, domainB, srvA, domainA, 1+refreshes)
	}
	if addrB > 2*(1+refreshes) {
		t.Fatalf("%d address queries for %s, want at most one A and one AAAA (per refresh)", addrB, infraB)
	}
}

// TestFallbackToTheNextTarget gives B two SRV targets: at priority 1 one
// that fails, at priority 2 B's real ingress. Requests
// succeed through the second, and the first is skipped while it is marked
// down.
func TestFallbackToTheNextTarget(t *testing.T) {
	cases := []struct {
		name  string
		first func(t *testing.T) (port uint16, attempts func() int)
	}{
		{name: "port closed", first: func(t *testing.T) (uint16, func() int) { return closedPort(t), nil }},
		{name: "connection dropped before the TLS handshake", first: dropper},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			serve(t, w.b, "brig", component)
			_, ingressPort, err := net.SplitHostPort(w.b.IngressAddr)
			if err != nil {
				t.Fatal(err)
			}
			var port uint16
			fmt.Sscan(ingressPort, &port)
			badPort, attempts := tc.first(t)
			w.dns.SetSRV(domainB, 60,
				testbed.SRVRecord{Target: "down.b-infra.example.net", Port: badPort, Priority: 1, Weight: 1},
				testbed.SRVRecord{Target: infraB, Port: port, Priority: 2, Weight: 1})
			mustSetA(t, w.dns, "down.b-infra.example.net", "127.0.0.1")
			for i := range 50 {
				got, err := w.a.Client("/t").Call(context.Background(), domainB, "brig", "echo", []byte(`1`))
				if err != nil || string(got) != "1" {
					t.Fatalf("call %d: %q, %v", i, got, err)
				}
			}
			if attempts != nil {
				if n := attempts(); n != 1 {
					t.Fatalf("the failing target was tried %d times in 50 calls, want once (then marked down)", n)
				}
			}
		})
	}
}

// dropper listens on loopback and closes every connection at once; it
// returns its port and the number of connections it took.
func dropper(t *testing.T) (uint16, func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return uint16(ln.Addr().(*net.TCPAddr).Port), func() int { return int(n.Load()) }
}
