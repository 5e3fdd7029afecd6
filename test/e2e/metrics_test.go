package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/ops"
	"github.com/fedbus/fedbus/setup"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// opsServer serves the ops endpoints of one process of a backend on
// 127.0.0.1 and returns the base URL.
func opsServer(tb testing.TB, sh *setup.Shared) string {
	tb.Helper()
	srv := ops.New(sh.Metrics.Registry(), slog.New(slog.DiscardHandler))
	if err := srv.Start("127.0.0.1:0"); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return "http://" + srv.Addr().String()
}

// scrape GETs /metrics of base, lints it with promlint and returns the
// families.
func scrape(tb testing.TB, base string) map[string]*dto.MetricFamily {
	tb.Helper()
	resp, err := http.Get(base + ops.PathMetrics)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	problems, err := promlint.New(strings.NewReader(string(body))).Lint()
	if err != nil {
		tb.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		tb.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		tb.Fatalf("parse /metrics: %v", err)
	}
	for name := range fams {
		if !strings.HasPrefix(name, "fedbus_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") {
			tb.Errorf("metric %s does not start with fedbus_", name)
		}
	}
	return fams
}

// value returns the value of the series of family name whose labels
// include labels (counter, gauge, or a histogram's count), and whether it
// exists.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// series returns the number of series of family name.
func series(fams map[string]*dto.MetricFamily, name string) int {
	return len(fams[name].GetMetric())
}

// TestMetricsMove causes each event for real and watches its metric move
// on /metrics of the federator of A and of the ingress of B; every scrape
// passes promlint and every metric name starts with fedbus_ (besides the
// standard go_ and process_ collectors).
func TestMetricsMove(t *testing.T) {
	w := newWorld(t, "tls.example.com", "servfail.example.com")
	serve(t, w.b, "brig", component)
	fedA := opsServer(t, w.a.FederatorShared[0])
	inB := opsServer(t, w.b.IngressShared)
	client := w.a.Client("/brig")
	call := func(target, rpc, body string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := client.Call(ctx, target, "brig", rpc, []byte(body))
		return err
	}

	t.Run("build info", func(t *testing.T) {
		if v, ok := value(scrape(t, fedA), "fedbus_build_info"); !ok || v != 1 {
			t.Errorf("fedbus_build_info = %v, %v", v, ok)
		}
		if v, _ := value(scrape(t, fedA), "fedbus_nats_connected"); v != 1 {
			t.Errorf("fedbus_nats_connected = %v", v)
		}
		if v, _ := value(scrape(t, fedA), "fedbus_certificate_expiry_timestamp_seconds"); v < float64(time.Now().Unix()) {
			t.Errorf("fedbus_certificate_expiry_timestamp_seconds = %v", v)
		}
	})

	t.Run("success both ways", func(t *testing.T) {
		if err := call(domainB, "echo", `"x"`); err != nil {
			t.Fatal(err)
		}
		a, b := scrape(t, fedA), scrape(t, inB)
		if v, _ := value(a, "fedbus_requests_out_total", "domain", domainB, "component", "brig", "outcome", "success"); v != 1 {
			t.Errorf("requests out success = %v, want 1", v)
		}
		if v, _ := value(a, "fedbus_request_out_duration_seconds", "domain", domainB, "component", "brig"); v != 1 {
			t.Errorf("out duration count = %v, want 1", v)
		}
		if v, _ := value(b, "fedbus_requests_in_total", "domain", domainA, "component", "brig", "outcome", "success"); v != 1 {
			t.Errorf("requests in success = %v, want 1", v)
		}
		if v, _ := value(b, "fedbus_request_in_duration_seconds", "domain", domainA, "component", "brig"); v != 1 {
			t.Errorf("in duration count = %v, want 1", v)
		}
		if v, _ := value(a, "fedbus_discovery_lookups_total", "type", "srv", "result", "miss"); v < 1 {
			t.Errorf("discovery srv misses = %v, want >= 1", v)
		}
		if err := call(domainB, "echo", `"y"`); err != nil {
			t.Fatal(err)
		}
		if v, _ := value(scrape(t, fedA), "fedbus_discovery_lookups_total", "type", "srv", "result", "hit"); v < 1 {
			t.Errorf("discovery srv hits = %v, want >= 1", v)
		}
	})

	t.Run("in flight", func(t *testing.T) {
		done := make(chan error, 1)
		go func() { done <- call(domainB, "slow", "700") }()
		waitFor(t, 5*time.Second, "one request in flight on both sides", func() bool {
			a, _ := value(scrape(t, fedA), "fedbus_requests_out_in_flight", "domain", domainB)
			b, _ := value(scrape(t, inB), "fedbus_requests_in_in_flight", "domain", domainA)
			return a == 1 && b == 1
		})
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if v, _ := value(scrape(t, fedA), "fedbus_requests_out_in_flight", "domain", domainB); v != 0 {
			t.Errorf("in flight after = %v", v)
		}
	})

	t.Run("refusal", func(t *testing.T) {
		if err := call("denied.example.com", "echo", `1`); err == nil {
			t.Fatal("call to a domain not allowed succeeded")
		}
		if v, _ := value(scrape(t, fedA), "fedbus_refusals_total", "direction", "outbound", "label", contract.LabelFederationDenied); v != 1 {
			t.Errorf("outbound refusals federation-denied = %v, want 1", v)
		}
	})

	t.Run("dns error", func(t *testing.T) {
		w.dns.SetFailure(testbed.SRVName("servfail.example.com"), dns.RcodeServerFailure)
		if err := call("servfail.example.com", "echo", `1`); err == nil {
			t.Fatal("call succeeded")
		}
		if v, _ := value(scrape(t, fedA), "fedbus_dns_errors_total", "type", "srv"); v < 1 {
			t.Errorf("dns errors srv = %v, want >= 1", v)
		}
		if v, _ := value(scrape(t, fedA), "fedbus_requests_out_total", "domain", "servfail.example.com", "outcome", contract.LabelDiscoveryFailure); v != 1 {
			t.Errorf("requests out discovery-failure = %v, want 1", v)
		}
	})

	t.Run("tls handshake failures", func(t *testing.T) {
		// Outbound: the SRV target's name is not in B's certificate.
		_, port, _ := net.SplitHostPort(w.b.IngressAddr)
		p, _ := strconv.Atoi(port)
		w.dns.SetSRV("tls.example.com", 60, testbed.SRVRecord{Target: "wrong.infra.test", Port: uint16(p), Priority: 1, Weight: 1})
		mustSetA(t, w.dns, "wrong.infra.test", "127.0.0.1")
		if err := call("tls.example.com", "echo", `1`); err == nil {
			t.Fatal("call succeeded")
		}
		if v, _ := value(scrape(t, fedA), "fedbus_tls_handshake_failures_total", "direction", "outbound", "reason", "hostname-mismatch"); v != 1 {
			t.Errorf("outbound hostname-mismatch = %v, want 1", v)
		}
		// Inbound: a client certificate of another CA.
		other, err := testbed.NewCA("other CA")
		if err != nil {
			t.Fatal(err)
		}
		cert := leaf(t, other, infraA)
		conn, err := tls.Dial("tcp", w.b.IngressAddr, &tls.Config{
			InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, //nolint:gosec // the test's client, not B's name
			// Sent even though B does not ask for this CA's certificates.
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		})
		if err == nil {
			_, _ = conn.Read(make([]byte, 1)) // TLS 1.3: the refusal arrives after the handshake
			conn.Close()
		}
		waitFor(t, 5*time.Second, "the inbound handshake failure", func() bool {
			v, _ := value(scrape(t, inB), "fedbus_tls_handshake_failures_total", "direction", "inbound", "reason", "unknown-authority")
			return v == 1
		})
	})

	t.Run("micro service", func(t *testing.T) {
		// The federator answers $SRV.STATS with the requests it served
		// (every process answers: the federator's is the one with role
		// federator).
		inbox := nats.NewInbox()
		sub, err := w.a.NATS.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		if err := w.a.NATS.PublishRequest("$SRV.STATS."+contract.ServiceName, inbox, nil); err != nil {
			t.Fatal(err)
		}
		for {
			msg, err := sub.NextMsg(2 * time.Second)
			if err != nil {
				t.Fatalf("no stats of the federator: %v", err)
			}
			var st micro.Stats
			if json.Unmarshal(msg.Data, &st) != nil || st.Metadata[contract.MetaRole] != "federator" {
				continue
			}
			if len(st.Endpoints) != 1 || st.Endpoints[0].NumRequests == 0 || st.Endpoints[0].NumErrors == 0 {
				t.Errorf("stats: %s", msg.Data)
			}
			return
		}
	})
}

// TestMetricLabelsStayBounded: 10,000 unknown domains tried outbound (a
// federator with allow-list refusing them) and inbound (an ingress
// refusing unknown origins), and 200 more through a federator with
// allow-all (each failing at discovery), add no series per domain: they
// are all folded into "other".
func TestMetricLabelsStayBounded(t *testing.T) {
	const n, nAll = 10000, 200
	ca, err := testbed.NewCA("e2e CA")
	if err != nil {
		t.Fatal(err)
	}
	dnsSrv := testbed.StartDNS(t)
	a := startBackend(t, fedtest.BackendOptions{Domain: domainA, InfraHost: infraA, CA: ca, DNS: dnsSrv, Dir: t.TempDir(),
		Strategy: "allow-list", AllowList: []string{domainB}})
	b := startBackend(t, fedtest.BackendOptions{Domain: domainB, InfraHost: infraB, CA: ca, DNS: dnsSrv, Dir: t.TempDir(),
		Strategy: "allow-list", AllowList: []string{domainA}})
	c := startBackend(t, fedtest.BackendOptions{Domain: domainC, InfraHost: infraC, CA: ca, DNS: dnsSrv, Dir: t.TempDir(), Strategy: "allow-all"})
	fedA, fedC := opsServer(t, a.FederatorShared[0]), opsServer(t, c.FederatorShared[0])
	inB := opsServer(t, b.IngressShared)

	hc := (&world{ca: ca}).rawClient(t, leaf(t, ca, infraA))
	try := func(be *fedtest.Backend, count int, inbound bool) {
		req, err := bus.NewRequester(be.NATS, nil, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = req.Close() }()
		client := bus.NewClient(req, be.Subjects, "/brig")
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for i := range count {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				domain := fmt.Sprintf("unknown-%d.example.org", i)
				if _, err := client.Call(ctx, domain, "brig", "echo", []byte(`1`)); err == nil {
					t.Errorf("call to %s succeeded", domain)
				}
				if !inbound {
					return
				}
				r, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+b.IngressAddr+"/federation/brig/echo", strings.NewReader(`1`))
				r.Header.Set(contract.HTTPOriginDomain, domain)
				if resp, err := hc.Do(r); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		wg.Wait()
	}
	try(a, n, true)
	try(c, nAll, false)
	out, in, all := scrape(t, fedA), scrape(t, inB), scrape(t, fedC)
	if v, _ := value(out, "fedbus_requests_out_total", "domain", "other", "outcome", contract.LabelFederationDenied); v != n {
		t.Errorf("requests out to other domains = %v, want %d", v, n)
	}
	if v, _ := value(in, "fedbus_requests_in_total", "domain", "other", "outcome", contract.LabelFederationDenied); v != n {
		t.Errorf("requests in from other domains = %v, want %d", v, n)
	}
	if v, _ := value(all, "fedbus_requests_out_total", "domain", "other", "outcome", contract.LabelInvalidDomain); v != nAll {
		t.Errorf("requests out to other domains under allow-all = %v, want %d", v, nAll)
	}
	for _, c := range []struct {
		fams map[string]*dto.MetricFamily
		name string
	}{
		{out, "fedbus_requests_out_total"}, {out, "fedbus_request_out_duration_seconds"}, {out, "fedbus_refusals_total"},
		{in, "fedbus_requests_in_total"}, {in, "fedbus_request_in_duration_seconds"}, {in, "fedbus_refusals_total"},
		{all, "fedbus_requests_out_total"}, {all, "fedbus_request_out_duration_seconds"}, {all, "fedbus_requests_out_in_flight"},
	} {
		if s := series(c.fams, c.name); s > 3 {
			t.Errorf("%s has %d series after %d unknown domains", c.name, s, n)
		}
	}
}
