package ingress

import (
	"bytes"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

// manyOrigins gives n origin domains an SRV record naming infraA (the
// host of certificate A) and returns them: under allow-all, certificate A
// proves every one of them.
func (e *env) manyOrigins(n int) []string {
	origins := make([]string, n)
	for i := range origins {
		origins[i] = "o" + strconv.Itoa(i) + ".proven.example.com"
		e.dns.SetSRV(origins[i], 60, testbed.SRVRecord{Target: infraA, Port: 443, Priority: 10, Weight: 5})
	}
	return origins
}

// srvQueries returns how many SRV queries the DNS server got for the
// origins.
func (e *env) srvQueries(origins []string) int {
	n := 0
	for _, o := range origins {
		n += e.dns.Queries(testbed.SRVName(o), dns.TypeSRV)
	}
	return n
}

// TestCertificateRateLimit: 50 origins proven by one certificate share
// that certificate's budget (its burst, then its rate), however generous
// each origin's own limits are; the requests over it are refused before
// any DNS lookup; another certificate keeps its own budget.
func TestCertificateRateLimit(t *testing.T) {
	const burst = 10
	e := newEnv(t, envOpts{allowAll: true, originRate: 100, originBurst: 100, certRate: 1.0 / 3600, certBurst: burst})
	e.serveEcho(t)
	origins := e.manyOrigins(50)
	clientA := e.client(t, e.certA, false)
	ok, refused := 0, 0
	for round := range 3 {
		for _, o := range origins {
			resp, body := e.mustDo(t, clientA, call{path: "/federation/brig/x", header: origin(o)})
			switch resp.StatusCode {
			case http.StatusOK:
				ok++
			case http.StatusTooManyRequests:
				refused++
				e := wantError(t, resp, body, http.StatusTooManyRequests, contract.LabelTooManyRequests)
				if !strings.Contains(e.Message, "client certificate") {
					t.Fatalf("round %d, %s: refused as %q, want the certificate's limit", round, o, e.Message)
				}
				wantRetryAfter(t, resp, 3000, 3600)
			default:
				t.Fatalf("round %d, %s: %s", round, o, describe(resp, body))
			}
		}
	}
	if ok != burst || refused != 3*len(origins)-burst {
		t.Fatalf("%d served and %d refused, want the certificate's burst of %d served", ok, refused, burst)
	}
	// The first `burst` origins were looked up; the others never were.
	if n := e.srvQueries(origins[burst:]); n != 0 {
		t.Errorf("%d SRV queries for origins refused by the certificate's limit, want none", n)
	}
	resp, body := e.mustDo(t, e.client(t, e.certC, false), call{path: "/federation/brig/x", header: origin(originC)})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("another certificate: %s", describe(resp, body))
	}
}

// TestCertificateConcurrencyLimit: requests of 50 origins proven by one
// certificate, all held by the component, are at most the certificate's
// limit in flight; the rest get 429 at once.
func TestCertificateConcurrencyLimit(t *testing.T) {
	const limit = 4
	e := newEnv(t, envOpts{allowAll: true, originConcurrency: 10, certConcurrency: limit})
	held, release := e.holdingComponent(t)
	watch := e.watchBus(t)
	origins := e.manyOrigins(50)
	clientA := e.client(t, e.certA, false)
	statuses := make(chan int, len(origins))
	var wg sync.WaitGroup
	for _, o := range origins {
		wg.Go(func() {
			resp, _, err := e.do(t, clientA, call{path: "/federation/galley/hold", header: origin(o)})
			if err != nil {
				t.Errorf("%s: %v", o, err)
				statuses <- 0
				return
			}
			statuses <- resp.StatusCode
		})
	}
	for range limit {
		within(t, held, "a held request")
	}
	// Every other request is answered while the held ones still are.
	counts := map[int]int{}
	for range len(origins) - limit {
		counts[within(t, statuses, "an answer")]++
	}
	if counts[http.StatusTooManyRequests] != len(origins)-limit {
		t.Fatalf("answers while %d are held: %v, want %d too-many-requests", limit, counts, len(origins)-limit)
	}
	if n := watch.published(t); n != limit {
		t.Errorf("%d requests reached the bus, want %d", n, limit)
	}
	release()
	wg.Wait()
	for range limit {
		if s := <-statuses; s != http.StatusOK {
			t.Errorf("a held request ended with %d", s)
		}
	}
}

// TestFailedAuthenticationLimit: a certificate that keeps failing
// authentication (claiming origins without an SRV record, or whose SRV
// targets it does not match) is refused before any DNS lookup once its
// failure budget is spent; another certificate is not affected.
func TestFailedAuthenticationLimit(t *testing.T) {
	const burst = 5
	e := newEnv(t, envOpts{allowAll: true, authFailRate: 1.0 / 3600, authFailBurst: burst})
	e.serveEcho(t)
	clientA := e.client(t, e.certA, false)
	claims := make([]string, 30)
	for i := range claims {
		claims[i] = "nosrv" + strconv.Itoa(i) + ".example.com" // NXDOMAIN
	}
	for i, o := range claims {
		resp, body := e.mustDo(t, clientA, call{path: "/federation/brig/x", header: origin(o)})
		if i < burst {
			wantError(t, resp, body, http.StatusUnprocessableEntity, contract.LabelInvalidDomain)
			continue
		}
		e := wantError(t, resp, body, http.StatusTooManyRequests, contract.LabelTooManyRequests)
		if !strings.Contains(e.Message, "failed authentication") {
			t.Fatalf("claim %d refused as %q, want the failure limit", i, e.Message)
		}
	}
	if n := e.srvQueries(claims[burst:]); n != 0 {
		t.Errorf("%d SRV queries after the failure budget was spent, want none", n)
	}
	// Certificate C proving its own origin is not concerned.
	resp, body := e.mustDo(t, e.client(t, e.certC, false), call{path: "/federation/brig/x", header: origin(originC)})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("another certificate: %s", describe(resp, body))
	}
}

// TestBodyLimitClampedToNATS: FED_MAX_BODY_BYTES over what a NATS message
// carries is lowered to it when the ingress is made (one INFO line with
// both values): a body at the lowered limit reaches the component, one
// byte more is payload-too-large.
func TestBodyLimitClampedToNATS(t *testing.T) {
	e := newEnv(t, envOpts{})
	logs := &testbed.LogBuffer{}
	cfg := e.in.cfg
	cfg.MaxBodyBytes = 16 << 20
	in, err := New(cfg, Deps{NATS: e.nc, Resolver: e.resolver, Policy: e.in.policy, Certs: e.in.certs, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.requester.Close() })
	want := e.nc.MaxPayload() - bus.HeaderRoom
	if in.cfg.MaxBodyBytes != want || e.in.cfg.MaxBodyBytes != want {
		t.Fatalf("MaxBodyBytes = %d (and %d from the default), want %d", in.cfg.MaxBodyBytes, e.in.cfg.MaxBodyBytes, want)
	}
	lines, err := logs.JSONLines()
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 1 || lines[0]["level"] != "INFO" || lines[0]["configured"] != float64(16<<20) || lines[0]["max_body_bytes"] != float64(want) {
		t.Errorf("log lines %v, want one INFO line with configured and max_body_bytes", lines)
	}

	got := e.serveRaw(t, "brig", func(*nats.Msg) *bus.Event { return response(`"ok"`) })
	client := e.client(t, e.certA, false)
	resp, body := e.mustDo(t, client, call{path: "/federation/brig/x", header: origin(originA), body: bytes.NewReader(bytes.Repeat([]byte("x"), int(want)))})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("body at the limit: %s", describe(resp, body[:min(len(body), 200)]))
	}
	if c := recv(t, got); len(c.data) != int(want) {
		t.Errorf("the component got %d bytes, want %d", len(c.data), want)
	}
	resp, body = e.mustDo(t, client, call{path: "/federation/brig/x", header: origin(originA), body: bytes.NewReader(bytes.Repeat([]byte("x"), int(want)+1))})
	wantError(t, resp, body, http.StatusRequestEntityTooLarge, contract.LabelPayloadTooLarge)
}
