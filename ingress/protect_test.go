package ingress

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/sethvargo/go-envconfig"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

// ---- helpers ---------------------------------------------------------------

// dialTLS opens a TLS connection to the ingress presenting cert (none when
// nil) and offering the ALPN protocols, closed at cleanup.
func (e *env) dialTLS(tb testing.TB, cert *testbed.Leaf, protos ...string) *tls.Conn {
	tb.Helper()
	cfg := e.clientTLS(tb, cert)
	cfg.NextProtos = protos
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", strings.TrimPrefix(e.base, "https://"), cfg)
	if err != nil {
		tb.Fatalf("dial TLS: %v", err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// closedWithin reads from conn until the server closes it and fails tb
// when that takes longer than limit. It returns how long it took.
func closedWithin(tb testing.TB, conn net.Conn, limit time.Duration) time.Duration {
	tb.Helper()
	start := time.Now()
	if err := conn.SetReadDeadline(start.Add(limit)); err != nil {
		tb.Fatal(err)
	}
	_, err := io.Copy(io.Discard, conn)
	took := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		tb.Fatalf("connection still open after %v", took)
	}
	return took
}

// dribble writes the chunks to conn one by one, every interval, until
// they are written, a write fails (the server closed the connection) or
// stop is closed.
func dribble(conn net.Conn, interval time.Duration, stop <-chan struct{}, chunks ...string) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for _, c := range chunks {
		if _, err := conn.Write([]byte(c)); err != nil {
			return
		}
		select {
		case <-t.C:
		case <-stop:
			return
		}
	}
}

// okCall sends one request from origin A that must succeed.
func (e *env) okCall(tb testing.TB, client *http.Client) {
	tb.Helper()
	resp, body := e.mustDo(tb, client, call{path: "/federation/brig/x", header: origin(originA)})
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("normal request: %s", describe(resp, body))
	}
}

// wantRetryAfter checks that a 429 carries Retry-After: whole seconds in
// [lo, hi].
func wantRetryAfter(tb testing.TB, resp *http.Response, lo, hi int) {
	tb.Helper()
	v := resp.Header.Get("Retry-After")
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		tb.Errorf("Retry-After %q, want seconds in [%d, %d]", v, lo, hi)
	}
}

// requestFields are the HTTP/2 header fields of a federated request.
func requestFields(path, originDomain string) []hpack.HeaderField {
	return []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"},
		{Name: ":authority", Value: "localhost"}, {Name: ":path", Value: path},
		{Name: "wire-origin-domain", Value: originDomain}, {Name: "content-type", Value: "application/json"},
	}
}

// holdingComponent serves galley: rpc "hold" is answered only when
// release is closed (each message in its own goroutine, so that several
// can be held at once), anything else at once. Every held message is
// announced on the returned channel.
func (e *env) holdingComponent(tb testing.TB) (held <-chan string, release func()) {
	tb.Helper()
	nc := connect(tb, e.ns)
	heldCh := make(chan string, 64)
	stop := make(chan struct{})
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(stop) }) }
	var wg sync.WaitGroup
	tb.Cleanup(func() { releaseAll(); wg.Wait() })
	_, err := nc.QueueSubscribe("fed.in.galley.>", "galley", func(m *nats.Msg) {
		route, err := e.subjects.ParseIn(m.Subject)
		if err != nil || route.RPC != "hold" {
			_ = m.RespondMsg(response(`{"quick":true}`).Message(m.Reply))
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			heldCh <- route.Domain
			<-stop
			_ = m.RespondMsg(response(`{"held":true}`).Message(m.Reply))
		}()
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	return heldCh, releaseAll
}

// ---- per-origin limits ---------------------------------------------------------

// TestOriginRateLimit checks the token bucket: an origin over its burst
// gets 429 too-many-requests with Retry-After and nothing reaches the bus,
// while another origin keeps its own budget.
func TestOriginRateLimit(t *testing.T) {
	// One request per minute after a burst of 3: deterministic.
	e := newEnv(t, envOpts{originRate: 1.0 / 60, originBurst: 3})
	e.serveEcho(t)
	watch := e.watchBus(t)
	clientA := e.client(t, e.certA, false)
	clientC := e.client(t, e.certC, false)

	t.Run("the burst passes", func(t *testing.T) {
		for range 3 {
			e.okCall(t, clientA)
		}
	})
	t.Run("over the burst: 429, Retry-After, nothing published", func(t *testing.T) {
		before := watch.published(t)
		for _, client := range []*http.Client{clientA, e.client(t, e.certA, true)} {
			resp, body := e.mustDo(t, client, call{path: "/federation/brig/x", header: origin(originA)})
			wantError(t, resp, body, http.StatusTooManyRequests, contract.LabelTooManyRequests)
			wantRetryAfter(t, resp, 50, 60)
		}
		if n := watch.published(t) - before; n != 0 {
			t.Fatalf("%d refused request(s) reached the bus", n)
		}
	})
	t.Run("another origin keeps its budget", func(t *testing.T) {
		resp, body := e.mustDo(t, clientC, call{path: "/federation/brig/x", header: origin(originC)})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("origin C: %s", describe(resp, body))
		}
	})
	t.Run("a spoofed origin does not spend the real one's budget", func(t *testing.T) {
		// C's certificate claiming origin W (whose SRV target it does
		// not match) is refused before the limits: W's budget stays
		// whole.
		for range 5 {
			resp, body := e.mustDo(t, clientC, call{path: "/federation/brig/x", header: origin(originW)})
			wantError(t, resp, body, http.StatusForbidden, contract.LabelAuthenticationFailure)
		}
		clientW := e.client(t, e.certW, false)
		for range 3 {
			resp, body := e.mustDo(t, clientW, call{path: "/federation/brig/x", header: origin(originW)})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("origin W: %s", describe(resp, body))
			}
		}
	})
	t.Run("SetOriginLimits lifts the limit", func(t *testing.T) {
		if err := e.in.SetOriginLimits(0, 0, 0); err != nil {
			t.Fatal(err)
		}
		e.okCall(t, clientA)
		if err := e.in.SetOriginLimits(-1, 0, 0); err == nil {
			t.Error("SetOriginLimits accepted a negative rate")
		}
	})
}

// TestOriginConcurrencyLimit holds N requests of origin A in the
// component: A's next one gets 429 at once (nothing published), another
// origin is served meanwhile, and A is served again once they finish.
func TestOriginConcurrencyLimit(t *testing.T) {
	const limit = 2
	e := newEnv(t, envOpts{originConcurrency: limit})
	held, release := e.holdingComponent(t)
	watch := e.watchBus(t)
	clientA := e.client(t, e.certA, false)

	type result struct {
		status int
		err    error
	}
	done := make(chan result, limit)
	for range limit {
		go func() {
			resp, _, err := e.do(t, clientA, call{path: "/federation/galley/hold", header: origin(originA)})
			if err != nil {
				done <- result{err: err}
				return
			}
			done <- result{status: resp.StatusCode}
		}()
	}
	for range limit {
		if got := within(t, held, "a held request"); got != originA {
			t.Fatalf("held request of %s", got)
		}
	}

	t.Run("the origin over its limit gets 429", func(t *testing.T) {
		before := watch.published(t)
		resp, body := e.mustDo(t, clientA, call{path: "/federation/galley/quick", header: origin(originA)})
		wantError(t, resp, body, http.StatusTooManyRequests, contract.LabelTooManyRequests)
		wantRetryAfter(t, resp, 1, 1)
		if n := watch.published(t) - before; n != 0 {
			t.Fatalf("%d refused request(s) reached the bus", n)
		}
	})
	t.Run("another origin is not affected", func(t *testing.T) {
		clientC := e.client(t, e.certC, false)
		for range limit + 1 {
			resp, body := e.mustDo(t, clientC, call{path: "/federation/galley/quick", header: origin(originC)})
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("origin C: %s", describe(resp, body))
			}
		}
	})
	t.Run("served again when the slots are free", func(t *testing.T) {
		release()
		for range limit {
			if r := within(t, done, "a held request to finish"); r.err != nil || r.status != http.StatusOK {
				t.Fatalf("held request: %d %v", r.status, r.err)
			}
		}
		resp, body := e.mustDo(t, clientA, call{path: "/federation/galley/quick", header: origin(originA)})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("after release: %s", describe(resp, body))
		}
	})
}

// TestOriginLimiterEviction checks the limiter's memory: states of idle
// origins go, but never while they still carry a budget that a new state
// would not (requests in flight, a bucket not yet refilled).
func TestOriginLimiterEviction(t *testing.T) {
	newLimiter := func(tb testing.TB, rps float64, burst, conc int) (*originLimiter, *testbed.Clock) {
		tb.Helper()
		clk := testbed.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		l := newOriginLimiter(rps, burst, conc, clk.Now)
		if l == nil {
			tb.Fatal("no limiter")
		}
		return l, clk
	}
	use := func(tb testing.TB, l *originLimiter, origin string) bool {
		tb.Helper()
		ok, _ := l.acquire(origin)
		if ok {
			l.release(origin)
		}
		return ok
	}

	t.Run("no limits, no limiter", func(t *testing.T) {
		if l := newOriginLimiter(0, 100, 0, nil); l != nil {
			t.Fatal("a limiter without limits")
		}
	})
	t.Run("idle origins are swept", func(t *testing.T) {
		l, clk := newLimiter(t, 10, 5, 0)
		for i := range 3000 {
			use(t, l, "o"+strconv.Itoa(i)+".example.com")
		}
		// Their buckets are not full yet: the size-triggered sweeps keep them.
		if n := l.len(); n != 3000 {
			t.Fatalf("%d states, want 3000", n)
		}
		clk.Advance(l.sweepEvery)
		use(t, l, "new.example.com")
		if n := l.len(); n != 1 {
			t.Fatalf("%d states after the sweep, want 1", n)
		}
	})
	t.Run("memory stays bounded under a churn of origins", func(t *testing.T) {
		l, clk := newLimiter(t, 1000, 1, 0) // a bucket refills in 1ms
		most := 0
		for i := range 20000 {
			use(t, l, "o"+strconv.Itoa(i)+".example.com")
			clk.Advance(time.Millisecond)
			most = max(most, l.len())
		}
		if most > 2*minSweep {
			t.Fatalf("%d states at most, want at most %d", most, 2*minSweep)
		}
	})
	t.Run("an origin with requests in flight is kept", func(t *testing.T) {
		l, clk := newLimiter(t, 10, 5, 1)
		if ok, _ := l.acquire("busy.example.com"); !ok {
			t.Fatal("first acquire refused")
		}
		clk.Advance(10 * l.sweepEvery)
		use(t, l, "other.example.com")
		if ok, r := l.acquire("busy.example.com"); ok || r.reason != refusedConcurrency {
			t.Fatalf("second acquire: %v %+v, want refused for concurrency", ok, r)
		}
		l.release("busy.example.com")
		if !use(t, l, "busy.example.com") {
			t.Fatal("refused after release")
		}
	})
	t.Run("a drained bucket survives the sweep", func(t *testing.T) {
		// Burst 2, one token per minute: after a sweep interval only one
		// token is back, so the state must stay (a new one would have 2).
		l, clk := newLimiter(t, 1.0/60, 2, 0)
		for range 2 {
			if !use(t, l, "x.example.com") {
				t.Fatal("burst refused")
			}
		}
		if use(t, l, "x.example.com") {
			t.Fatal("over the burst accepted")
		}
		clk.Advance(l.sweepEvery + time.Second)
		use(t, l, "trigger.example.com")
		if !use(t, l, "x.example.com") {
			t.Fatal("the refilled token refused")
		}
		if use(t, l, "x.example.com") {
			t.Fatal("the sweep reset the bucket: a second token was available")
		}
	})
	t.Run("concurrency-only states go with their last request", func(t *testing.T) {
		l, _ := newLimiter(t, 0, 0, 3)
		for i := range 100 {
			use(t, l, "o"+strconv.Itoa(i)+".example.com")
		}
		if n := l.len(); n != 0 {
			t.Fatalf("%d states, want 0", n)
		}
	})
	t.Run("Retry-After of the rate", func(t *testing.T) {
		l, clk := newLimiter(t, 0.5, 1, 0) // a token every 2s
		use(t, l, "r.example.com")
		ok, r := l.acquire("r.example.com")
		if ok || r.reason != refusedRate || retryAfterSeconds(r.retryAfter) != 2 {
			t.Fatalf("got %v %+v, want refused with 2s", ok, r)
		}
		clk.Advance(1500 * time.Millisecond)
		if _, r := l.acquire("r.example.com"); retryAfterSeconds(r.retryAfter) != 1 {
			t.Fatalf("Retry-After %v, want 1s", r.retryAfter)
		}
	})
	t.Run("one warning per origin and interval", func(t *testing.T) {
		l, clk := newLimiter(t, 1.0/3600, 1, 0)
		use(t, l, "w.example.com")
		var warned []int
		for range 5 {
			if _, r := l.acquire("w.example.com"); r.warn {
				warned = append(warned, r.refused)
			}
		}
		clk.Advance(warnEvery)
		if _, r := l.acquire("w.example.com"); r.warn {
			warned = append(warned, r.refused)
		}
		if len(warned) != 2 || warned[0] != 1 || warned[1] != 5 {
			t.Fatalf("warnings with counts %v, want [1 5]", warned)
		}
	})
}

func TestRetryAfterSeconds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int64
	}{
		{0, 1}, {-time.Second, 1}, {time.Millisecond, 1}, {time.Second, 1},
		{1001 * time.Millisecond, 2}, {time.Minute, 60}, {time.Duration(math.MaxInt64), 3600},
	} {
		t.Run(tc.d.String(), func(t *testing.T) {
			if got := retryAfterSeconds(tc.d); got != tc.want {
				t.Errorf("retryAfterSeconds(%v) = %d, want %d", tc.d, got, tc.want)
			}
		})
	}
}

// ---- identity --------------------------------------------------------------

// TestIdentityModes checks FED_IDENTITY and FED_REQUIRE_DNSSEC through a
// real TLS connection and a real DNS server.
func TestIdentityModes(t *testing.T) {
	type certOf func(e *env, tb testing.TB) *testbed.Leaf
	san := func(names ...string) certOf {
		return func(e *env, tb testing.TB) *testbed.Leaf { return issue(tb, e.ca, testbed.LeafOptions{}, names...) }
	}
	srvTarget := func(e *env, _ testing.TB) *testbed.Leaf { return e.certA }
	cases := []struct {
		name   string
		opts   envOpts
		cert   certOf
		origin string
		status int    // 200 for success
		label  string // of a refusal
		inMsg  string // in the refusal's message
	}{
		{name: "srv: SRV target certificate", cert: srvTarget, origin: originA, status: 200},
		{name: "srv: certificate of the origin domain refused", cert: san(originA), origin: originA,
			status: 403, label: contract.LabelAuthenticationFailure, inMsg: "SRV target"},
		{name: "srv-or-domain: certificate of the origin domain", opts: envOpts{identity: config.IdentitySRVOrDomain},
			cert: san("A.Example.COM"), origin: originA, status: 200},
		{name: "srv-or-domain: SRV target certificate", opts: envOpts{identity: config.IdentitySRVOrDomain},
			cert: srvTarget, origin: originA, status: 200},
		{name: "srv-or-domain: wildcard of the domain refused", opts: envOpts{identity: config.IdentitySRVOrDomain},
			cert: san("*.example.com"), origin: originA, status: 403, label: contract.LabelAuthenticationFailure},
		{name: "srv-or-domain: another domain's certificate refused", opts: envOpts{identity: config.IdentitySRVOrDomain},
			cert: san(originC), origin: originA, status: 403, label: contract.LabelAuthenticationFailure},
		{name: "srv-or-domain: the origin still needs its SRV record", opts: envOpts{identity: config.IdentitySRVOrDomain},
			cert: san(noSRV), origin: noSRV, status: 422, label: contract.LabelInvalidDomain},
		{name: "DNSSEC required, answer without AD", opts: envOpts{requireDNSSEC: true},
			cert: srvTarget, origin: originA, status: 403, label: contract.LabelAuthenticationFailure, inMsg: "DNSSEC"},
		{name: "DNSSEC required, answer with AD", opts: envOpts{requireDNSSEC: true, authenticDNS: true},
			cert: srvTarget, origin: originA, status: 200},
		{name: "DNSSEC required, srv-or-domain, answer without AD", opts: envOpts{requireDNSSEC: true, identity: config.IdentitySRVOrDomain},
			cert: san(originA), origin: originA, status: 403, label: contract.LabelAuthenticationFailure, inMsg: "DNSSEC"},
		{name: "DNSSEC required, srv-or-domain, answer with AD", opts: envOpts{requireDNSSEC: true, authenticDNS: true, identity: config.IdentitySRVOrDomain},
			cert: san(originA), origin: originA, status: 200},
		{name: "DNSSEC required, no SRV record", opts: envOpts{requireDNSSEC: true, authenticDNS: true},
			cert: san(noSRV), origin: noSRV, status: 422, label: contract.LabelInvalidDomain},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.opts)
			e.serveEcho(t)
			watch := e.watchBus(t)
			resp, body := e.mustDo(t, e.client(t, tc.cert(e, t), false), call{path: "/federation/brig/x", header: origin(tc.origin)})
			if tc.status == http.StatusOK {
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("got %s, want 200", describe(resp, body))
				}
				return
			}
			be := wantError(t, resp, body, tc.status, tc.label)
			if !strings.Contains(be.Message, tc.inMsg) {
				t.Errorf("message %q does not mention %q", be.Message, tc.inMsg)
			}
			if n := watch.published(t); n != 0 {
				t.Fatalf("%d message(s) reached the bus", n)
			}
		})
	}
}

// ---- connection-level protection -------------------------------------------------

// TestSlowClients checks that clients that take their time get their
// connection closed after the read-header timeout (twice it for the first
// request of a connection: handshake, then headers), HTTP/2 included
// (whose idle timeout, the default 90s, would be much later), and that a
// normal client is served meanwhile.
func TestSlowClients(t *testing.T) {
	const rht = time.Second // the TLS handshake included: a busy machine needs a margin
	const slack = 3 * time.Second
	e := newEnv(t, envOpts{readHeaderTimeout: rht})
	e.serveEcho(t)
	normal := e.client(t, e.certA, false)
	cases := []struct {
		name  string
		limit time.Duration
		open  func(t *testing.T, stop <-chan struct{}) net.Conn
	}{
		{"TCP without a TLS handshake", rht + slack, func(t *testing.T, _ <-chan struct{}) net.Conn {
			c, err := net.DialTimeout("tcp", strings.TrimPrefix(e.base, "https://"), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			return c
		}},
		{"HTTP/1.1 headers dribbled", rht + slack, func(t *testing.T, stop <-chan struct{}) net.Conn {
			c := e.dialTLS(t, e.certA, "http/1.1")
			chunks := []string{"POST /federation/brig/x HTTP/1.1\r\n", "Host: localhost\r\n"}
			for i := range 200 {
				chunks = append(chunks, "X-Slow-"+strconv.Itoa(i)+": 1\r\n")
			}
			go dribble(c, 20*time.Millisecond, stop, chunks...)
			return c
		}},
		{"HTTP/1.1 without a request", rht + slack, func(t *testing.T, _ <-chan struct{}) net.Conn {
			return e.dialTLS(t, nil, "http/1.1")
		}},
		{"HTTP/2 connection without a stream", 2*rht + slack, func(t *testing.T, _ <-chan struct{}) net.Conn {
			c := e.dialTLS(t, e.certA, "h2")
			if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
				t.Fatal(err)
			}
			if err := http2.NewFramer(c, nil).WriteSettings(); err != nil {
				t.Fatal(err)
			}
			return c
		}},
		{"HTTP/2 HEADERS frame dribbled", 2*rht + slack, func(t *testing.T, stop <-chan struct{}) net.Conn {
			c := e.dialTLS(t, e.certA, "h2")
			var b bytes.Buffer
			fr := http2.NewFramer(&b, nil)
			if err := fr.WriteSettings(); err != nil {
				t.Fatal(err)
			}
			var hb bytes.Buffer
			enc := hpack.NewEncoder(&hb)
			for _, f := range requestFields("/federation/brig/x", originA) {
				if err := enc.WriteField(f); err != nil {
					t.Fatal(err)
				}
			}
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: true}); err != nil {
				t.Fatal(err)
			}
			frames := b.String()
			chunks := []string{http2.ClientPreface}
			for i := range len(frames) - 1 { // the last byte never comes
				chunks = append(chunks, frames[i:i+1])
			}
			go dribble(c, 20*time.Millisecond, stop, chunks...)
			return c
		}},
		{"HTTP/1.1 without a client certificate: closed after the answer", 2*rht + slack, func(t *testing.T, _ <-chan struct{}) net.Conn {
			c := e.dialTLS(t, nil, "http/1.1")
			req := "POST /federation/brig/x HTTP/1.1\r\nHost: localhost\r\nWire-Origin-Domain: " + originA +
				"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
			if _, err := io.WriteString(c, req); err != nil {
				t.Fatal(err)
			}
			return c
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stop := make(chan struct{})
			t.Cleanup(func() { close(stop) })
			conns := make([]net.Conn, 10)
			for i := range conns {
				conns[i] = tc.open(t, stop)
			}
			e.okCall(t, normal) // served while the slow connections are open
			var wg sync.WaitGroup
			for _, c := range conns {
				wg.Go(func() { closedWithin(t, c, tc.limit) })
			}
			wg.Wait()
		})
	}
	t.Run("HTTP/2 without a client certificate: GOAWAY after the answer", func(t *testing.T) {
		cc, err := (&http2.Transport{}).NewClientConn(e.dialTLS(t, nil, "h2"))
		if err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequest(http.MethodPost, "https://localhost/federation/brig/x", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = origin(originA)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, resp, body, http.StatusForbidden, contract.LabelNoClientCertificate)
		deadline := time.Now().Add(slack)
		for !cc.State().Closed {
			if time.Now().After(deadline) {
				t.Fatalf("connection still open: %+v", cc.State())
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestHTTP2Limits checks the HTTP/2 settings the ingress announces, and
// that a client that ignores SETTINGS_MAX_CONCURRENT_STREAMS gets the
// streams over the limit refused while a normal client is served.
func TestHTTP2Limits(t *testing.T) {
	const maxStreams, extra = 4, 5
	e := newEnv(t, envOpts{maxStreams: maxStreams})
	e.serveEcho(t)
	c := e.dialTLS(t, e.certA, "h2")
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		t.Fatalf("first frame %v, want SETTINGS", f)
	}
	settings := map[http2.SettingID]uint32{}
	_ = sf.ForeachSetting(func(s http2.Setting) error { settings[s.ID] = s.Val; return nil })
	t.Run("settings", func(t *testing.T) {
		for id, want := range map[http2.SettingID]uint32{
			http2.SettingMaxConcurrentStreams: maxStreams,
			http2.SettingMaxFrameSize:         MaxReadFrameSize,
		} {
			if got, ok := settings[id]; !ok || got != want {
				t.Errorf("%v = %d (sent %v), want %d", id, got, ok, want)
			}
		}
		if got := settings[http2.SettingMaxHeaderListSize]; got == 0 || got > 2*MaxHeaderBytes {
			t.Errorf("%v = %d, want about %d", http2.SettingMaxHeaderListSize, got, MaxHeaderBytes)
		}
	})
	if err := fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}

	t.Run("streams over the limit are refused", func(t *testing.T) {
		// Requests without END_STREAM: their handlers wait for the body,
		// so each one keeps its stream open.
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for i := range maxStreams + extra {
			hb.Reset()
			for _, f := range requestFields("/federation/brig/x", originA) {
				if err := enc.WriteField(f); err != nil {
					t.Fatal(err)
				}
			}
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
				t.Fatal(err)
			}
		}
		refused := map[uint32]http2.ErrCode{}
		for len(refused) < extra {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("reading frames: %v (refused so far: %v)", err, refused)
			}
			switch f := f.(type) {
			case *http2.RSTStreamFrame:
				refused[f.StreamID] = f.ErrCode
			case *http2.GoAwayFrame:
				t.Fatalf("GOAWAY %v", f.ErrCode)
			}
		}
		for id, code := range refused {
			if id <= 2*maxStreams-1 || (code != http2.ErrCodeRefusedStream && code != http2.ErrCodeProtocol) {
				t.Errorf("stream %d reset with %v, want the streams after the first %d refused", id, code, maxStreams)
			}
		}
		e.okCall(t, e.client(t, e.certA, false)) // another connection is served
	})
}

// TestProtectionConfig checks the environment variables of the
// protection and identity settings, their validation, and what New makes
// of a Config built in code.
func TestProtectionConfig(t *testing.T) {
	env := map[string]string{"FED_DOMAIN": "b.example.com", "FED_TLS_CERT": "x", "FED_TLS_KEY": "x", "FED_TLS_CA": "x"}
	load := func(tb testing.TB, set map[string]string) Config {
		tb.Helper()
		m := map[string]string{}
		for k, v := range env {
			m[k] = v
		}
		for k, v := range set {
			m[k] = v
		}
		cfg := NewConfig()
		if err := config.Load(context.Background(), &cfg, envconfig.MapLookuper(m)); err != nil {
			tb.Fatal(err)
		}
		return cfg
	}
	t.Run("defaults", func(t *testing.T) {
		cfg := load(t, nil)
		// Nothing set: the documented defaults.
		want := Config{OriginRate: 1000, OriginBurst: 2000, OriginConcurrency: 512,
			MaxStreams: 250, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 90 * time.Second}
		if cfg.OriginRate != want.OriginRate || cfg.OriginBurst != want.OriginBurst || cfg.OriginConcurrency != want.OriginConcurrency ||
			cfg.MaxStreams != want.MaxStreams || cfg.ReadHeaderTimeout != want.ReadHeaderTimeout || cfg.IdleTimeout != want.IdleTimeout {
			t.Errorf("got %+v", cfg)
		}
		if cfg.Identity != config.IdentitySRV || cfg.RequireDNSSEC {
			t.Errorf("identity %q, DNSSEC %v", cfg.Identity, cfg.RequireDNSSEC)
		}
		if cfg.CertRate != 2000 || cfg.CertBurst != 4000 || cfg.CertConcurrency != 1024 || cfg.AuthFailureRate != 1 || cfg.AuthFailureBurst != 20 {
			t.Errorf("certificate limits %v %d %d, failures %v %d", cfg.CertRate, cfg.CertBurst, cfg.CertConcurrency, cfg.AuthFailureRate, cfg.AuthFailureBurst)
		}
	})
	t.Run("usage lists the variables", func(t *testing.T) {
		var b bytes.Buffer
		cfg := NewConfig()
		config.Usage(&b, &cfg)
		for _, v := range []string{"FED_INGRESS_ORIGIN_RATE", "FED_INGRESS_ORIGIN_BURST", "FED_INGRESS_ORIGIN_CONCURRENCY",
			"FED_INGRESS_MAX_STREAMS", "FED_INGRESS_READ_HEADER_TIMEOUT", "FED_INGRESS_IDLE_TIMEOUT", "FED_IDENTITY", "FED_REQUIRE_DNSSEC",
			"FED_INGRESS_CERT_RATE", "FED_INGRESS_CERT_BURST", "FED_INGRESS_CERT_CONCURRENCY", "FED_INGRESS_AUTH_FAILURE_RATE",
			"FED_INGRESS_AUTH_FAILURE_BURST", "FED_IDENTITY_STALE_GRACE", "FED_DNS_CACHE_ENTRIES"} {
			if !strings.Contains(b.String(), v) {
				t.Errorf("usage misses %s", v)
			}
		}
	})
	for _, tc := range []struct {
		name string
		set  map[string]string
		bad  string // the variable named in the error, "" when valid
	}{
		{"limits off", map[string]string{"FED_INGRESS_ORIGIN_RATE": "0", "FED_INGRESS_ORIGIN_BURST": "0", "FED_INGRESS_ORIGIN_CONCURRENCY": "0"}, ""},
		{"fractional rate", map[string]string{"FED_INGRESS_ORIGIN_RATE": "0.5", "FED_INGRESS_ORIGIN_BURST": "1"}, ""},
		{"srv-or-domain with DNSSEC", map[string]string{"FED_IDENTITY": "srv-or-domain", "FED_REQUIRE_DNSSEC": "true"}, ""},
		{"negative rate", map[string]string{"FED_INGRESS_ORIGIN_RATE": "-1"}, "FED_INGRESS_ORIGIN_RATE"},
		{"rate not a number", map[string]string{"FED_INGRESS_ORIGIN_RATE": "NaN"}, "FED_INGRESS_ORIGIN_RATE"},
		{"rate without burst", map[string]string{"FED_INGRESS_ORIGIN_BURST": "0"}, "FED_INGRESS_ORIGIN_BURST"},
		{"negative burst", map[string]string{"FED_INGRESS_ORIGIN_RATE": "0", "FED_INGRESS_ORIGIN_BURST": "-1"}, "FED_INGRESS_ORIGIN_BURST"},
		{"negative concurrency", map[string]string{"FED_INGRESS_ORIGIN_CONCURRENCY": "-1"}, "FED_INGRESS_ORIGIN_CONCURRENCY"},
		{"no streams", map[string]string{"FED_INGRESS_MAX_STREAMS": "0"}, "FED_INGRESS_MAX_STREAMS"},
		{"no header time", map[string]string{"FED_INGRESS_READ_HEADER_TIMEOUT": "0s"}, "FED_INGRESS_READ_HEADER_TIMEOUT"},
		{"no idle time", map[string]string{"FED_INGRESS_IDLE_TIMEOUT": "0s"}, "FED_INGRESS_IDLE_TIMEOUT"},
		{"unknown identity mode", map[string]string{"FED_IDENTITY": "domain"}, "FED_IDENTITY"},
		{"certificate limits off", map[string]string{"FED_INGRESS_CERT_RATE": "0", "FED_INGRESS_CERT_BURST": "0", "FED_INGRESS_CERT_CONCURRENCY": "0",
			"FED_INGRESS_AUTH_FAILURE_RATE": "0", "FED_INGRESS_AUTH_FAILURE_BURST": "0"}, ""},
		{"negative certificate rate", map[string]string{"FED_INGRESS_CERT_RATE": "-1"}, "FED_INGRESS_CERT_RATE"},
		{"certificate rate without burst", map[string]string{"FED_INGRESS_CERT_BURST": "0"}, "FED_INGRESS_CERT_BURST"},
		{"negative certificate concurrency", map[string]string{"FED_INGRESS_CERT_CONCURRENCY": "-1"}, "FED_INGRESS_CERT_CONCURRENCY"},
		{"failure rate not a number", map[string]string{"FED_INGRESS_AUTH_FAILURE_RATE": "Inf"}, "FED_INGRESS_AUTH_FAILURE_RATE"},
		{"failure rate without burst", map[string]string{"FED_INGRESS_AUTH_FAILURE_BURST": "0"}, "FED_INGRESS_AUTH_FAILURE_BURST"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := load(t, tc.set)
			err := cfg.Validate()
			// The certificate files do not exist: only look at our variables.
			if tc.bad == "" {
				for _, v := range []string{"FED_INGRESS_", "FED_IDENTITY", "FED_REQUIRE_DNSSEC"} {
					if err != nil && strings.Contains(err.Error(), v) {
						t.Fatalf("Validate: %v", err)
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.bad) {
				t.Fatalf("Validate: %v, want an error naming %s", err, tc.bad)
			}
		})
	}

	t.Run("New", func(t *testing.T) {
		e := newEnv(t, envOpts{})
		deps := Deps{NATS: e.nc, Resolver: e.resolver, Policy: e.in.policy, Certs: e.in.certs, Logger: testLogger(t)}
		t.Run("defaults", func(t *testing.T) {
			in, err := New(NewConfig(), deps)
			if err != nil {
				t.Fatal(err)
			}
			h2 := in.srv.HTTP2
			if in.limits.Load() == nil || in.identity != config.IdentitySRV || h2 == nil ||
				h2.MaxConcurrentStreams != 250 || h2.MaxReadFrameSize != MaxReadFrameSize ||
				in.srv.ReadHeaderTimeout != 5*time.Second || in.srv.IdleTimeout != 90*time.Second ||
				in.srv.MaxHeaderBytes != MaxHeaderBytes {
				t.Errorf("got limits %v, identity %q, server %+v", in.limits.Load(), in.identity, in.srv)
			}
		})
		t.Run("origin limits off", func(t *testing.T) {
			cfg := NewConfig()
			cfg.OriginRate, cfg.OriginBurst, cfg.OriginConcurrency = 0, 0, 0
			in, err := New(cfg, deps)
			if err != nil {
				t.Fatal(err)
			}
			if l := in.limits.Load(); l != nil {
				t.Errorf("limiter %+v, want none", l)
			}
		})
		t.Run("rate without burst", func(t *testing.T) {
			in, err := New(NewConfig(), deps)
			if err != nil {
				t.Fatal(err)
			}
			if err := in.SetOriginLimits(2.5, 0, 0); err != nil {
				t.Fatal(err)
			}
			if l := in.limits.Load(); l == nil || l.burst != 3 {
				t.Errorf("limiter %+v, want burst 3", l)
			}
		})
		for name, change := range map[string]func(*Config){
			"negative rate":        func(c *Config) { c.OriginRate = -1 },
			"rate without burst":   func(c *Config) { c.OriginBurst = 0 },
			"negative concurrency": func(c *Config) { c.OriginConcurrency = -1 },
			"negative streams":     func(c *Config) { c.MaxStreams = -1 },
			"zero streams":         func(c *Config) { c.MaxStreams = 0 },
			"negative idle":        func(c *Config) { c.IdleTimeout = -time.Second },
			"unknown identity":     func(c *Config) { c.Identity = "cn" },
		} {
			t.Run(name, func(t *testing.T) {
				cfg := NewConfig()
				change(&cfg)
				if _, err := New(cfg, deps); err == nil {
					t.Fatal("New accepted it")
				}
			})
		}
	})
}

// ---- lingering close -----------------------------------------------------------

// slowUpload sends a request from a peer without a client certificate,
// over HTTP/2 or HTTP/1.1, whose body it writes slowly (chunks every
// interval, for longer than the server waits before closing a refused
// peer's connection) before it reads anything, as a simple client on a
// slow link does. It returns the error of the first failed write, and
// the status and body of the answer.
func (e *env) slowUpload(tb testing.TB, http1 bool, chunks int, interval time.Duration) (writeErr error, status int, body []byte) {
	tb.Helper()
	const chunkSize = 16 << 10
	chunk := bytes.Repeat([]byte("x"), chunkSize)
	length := strconv.Itoa(chunks * chunkSize)
	if http1 {
		c := e.dialTLS(tb, nil, "http/1.1")
		_, writeErr = io.WriteString(c, "POST /federation/brig/echo HTTP/1.1\r\nHost: localhost\r\nWire-Origin-Domain: "+originA+
			"\r\nContent-Type: application/json\r\nContent-Length: "+length+"\r\n\r\n")
		for i := 0; i < chunks && writeErr == nil; i++ {
			_, writeErr = c.Write(chunk)
			time.Sleep(interval)
		}
		if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			tb.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			tb.Fatalf("read the answer: %v (write error %v)", err, writeErr)
		}
		defer resp.Body.Close()
		body, err = io.ReadAll(resp.Body)
		if err != nil {
			tb.Fatalf("read the answer's body: %v (write error %v)", err, writeErr)
		}
		return writeErr, resp.StatusCode, body
	}
	c := e.dialTLS(tb, nil, "h2")
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		tb.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		tb.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range append(requestFields("/federation/brig/echo", originA), hpack.HeaderField{Name: "content-length", Value: length}) {
		if err := enc.WriteField(f); err != nil {
			tb.Fatal(err)
		}
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < chunks && writeErr == nil; i++ {
		writeErr = fr.WriteData(1, i == chunks-1, chunk)
		time.Sleep(interval)
	}
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		tb.Fatal(err)
	}
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) {
		if f.Name == ":status" {
			status, _ = strconv.Atoi(f.Value)
		}
	})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break // the server closed the connection
		}
		switch f := f.(type) {
		case *http2.HeadersFrame:
			if f.StreamID == 1 {
				if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
					tb.Fatal(err)
				}
			}
		case *http2.DataFrame:
			if f.StreamID == 1 {
				body = append(body, f.Data()...)
			}
		}
	}
	return writeErr, status, body
}

// TestRefusedPeerReadsTheWholeRefusal: a peer refused for its certificate
// while it is still sending its body gets the refusal with its JSON body:
// the server closes the connection gracefully (its side first, then it
// drains what the peer still sends), never with a reset, which would
// discard what the peer had not read yet.
func TestRefusedPeerReadsTheWholeRefusal(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, http1 := range []bool{false, true} {
		t.Run("http1="+strconv.FormatBool(http1), func(t *testing.T) {
			t.Parallel()
			// 48 chunks of 16 KiB (within the HTTP/2 flow-control window),
			// one every 35 ms: the peer still sends when the server closes
			// (HTTP/2: 1 s after its GOAWAY; HTTP/1.1: 0.5 s).
			writeErr, status, body := e.slowUpload(t, http1, 48, 35*time.Millisecond)
			if writeErr != nil {
				t.Errorf("the server reset the connection while the peer was sending: %v", writeErr)
			}
			var got contract.Error
			if status != http.StatusForbidden || json.Unmarshal(body, &got) != nil || got.Label != contract.LabelNoClientCertificate {
				t.Fatalf("answer %d %q, want 403 with the no-client-certificate body", status, body)
			}
		})
	}
}
