package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/ingress"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// Threats to the ingress of B from clients that are not A, while A's
// federated calls to B must go on: every one of normalCalls calls
// succeeds, each within normalBound.
const (
	normalCalls = 20
	normalBound = 2 * time.Second
)

// callsKeepSucceeding makes normalCalls echo calls from A to B one after
// the other and fails tb unless each one succeeds within normalBound.
func callsKeepSucceeding(tb testing.TB, w *world) {
	tb.Helper()
	for i := range normalCalls {
		ctx, cancel := context.WithTimeout(context.Background(), normalBound)
		body := []byte(strconv.Itoa(i))
		start := time.Now()
		got, err := w.a.Client("/t").Call(ctx, domainB, "brig", "echo", body)
		took := time.Since(start)
		cancel()
		if err != nil || !bytes.Equal(got, body) {
			tb.Fatalf("call %d from A to B: %q, %v (after %v)", i, got, err, took)
		}
		if took > normalBound {
			tb.Fatalf("call %d from A to B took %v, want under %v", i, took, normalBound)
		}
	}
}

// dialIngressB opens a TLS connection to B's ingress offering the ALPN
// protocol proto, with cert (nil: no client certificate), closed with
// the test.
func dialIngressB(tb testing.TB, w *world, cert *tls.Certificate, proto string) *tls.Conn {
	tb.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(w.ca.CertPEM)
	cfg := &tls.Config{RootCAs: pool, ServerName: infraB, MinVersion: tls.VersionTLS13, NextProtos: []string{proto}}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", w.b.IngressAddr, cfg)
	if err != nil {
		tb.Fatalf("dial B's ingress: %v", err)
	}
	if got := c.ConnectionState().NegotiatedProtocol; got != proto {
		tb.Fatalf("ALPN %q, want %q", got, proto)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// dribble writes data to c one byte every interval until it is all
// written (never the last byte when holdLast), a write fails or stop is
// closed.
func dribble(c net.Conn, data []byte, interval time.Duration, holdLast bool, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	if holdLast {
		data = data[:len(data)-1]
	}
	for i := range data {
		if _, err := c.Write(data[i : i+1]); err != nil {
			return
		}
		select {
		case <-t.C:
		case <-stop:
			return
		}
	}
}

// h2Request returns the client preface, a SETTINGS frame and the HEADERS
// frame of one federated request, as an HTTP/2 client sends them.
func h2Request(tb testing.TB, origin string) []byte {
	tb.Helper()
	var b, hb bytes.Buffer
	b.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&b, nil)
	if err := fr.WriteSettings(); err != nil {
		tb.Fatal(err)
	}
	enc := hpack.NewEncoder(&hb)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "https"}, {Name: ":authority", Value: infraB},
		{Name: ":path", Value: "/federation/brig/echo"}, {Name: "wire-origin-domain", Value: origin},
	} {
		if err := enc.WriteField(f); err != nil {
			tb.Fatal(err)
		}
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: true}); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// TestSlowLorisDoesNotStarveOthers opens 50 TLS connections to B's ingress
// without a client certificate that send their request a byte at a time,
// half over HTTP/1.1, half over HTTP/2 (never the last byte): A's calls to
// B go on meanwhile, and the server closes the HTTP/1.1 ones after its
// read-header timeout.
func TestSlowLorisDoesNotStarveOthers(t *testing.T) {
	const conns = 50
	w := newWorld(t)
	serve(t, w.b, "brig", component)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })

	h1Request := []byte("POST /federation/brig/echo HTTP/1.1\r\nHost: " + infraB + "\r\nWire-Origin-Domain: " + domainA +
		"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n" + strings.Repeat("X-Slow: 1\r\n", 100) + "\r\n{}")
	opened := time.Now()
	var h1 []*tls.Conn
	for i := range conns {
		if i%2 == 0 {
			c := dialIngressB(t, w, nil, "http/1.1")
			h1 = append(h1, c)
			go dribble(c, h1Request, 50*time.Millisecond, true, stop)
		} else {
			c := dialIngressB(t, w, nil, "h2")
			go dribble(c, h2Request(t, domainA), 50*time.Millisecond, true, stop)
		}
	}

	t.Run("A's calls to B succeed meanwhile", func(t *testing.T) { callsKeepSucceeding(t, w) })

	t.Run("the HTTP/1.1 connections are closed after the read-header timeout", func(t *testing.T) {
		limit := opened.Add(ingress.NewConfig().ReadHeaderTimeout + 5*time.Second)
		var wg sync.WaitGroup
		for _, c := range h1 {
			wg.Go(func() {
				if err := c.SetReadDeadline(limit); err != nil {
					t.Error(err)
					return
				}
				_, err := io.Copy(io.Discard, c)
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Errorf("connection still open %v after it was opened", time.Since(opened).Round(time.Millisecond))
				}
			})
		}
		wg.Wait()
	})
}

// newWorldWithC is newWorld where B also federates with c.example.com, an
// origin with its own SRV record and certificate but no backend: the
// client that misbehaves. It returns C's certificate.
func newWorldWithC(tb testing.TB) (*world, *tls.Certificate) {
	tb.Helper()
	ca, err := testbed.NewCA("e2e CA")
	if err != nil {
		tb.Fatal(err)
	}
	w := &world{ca: ca, dns: testbed.StartDNS(tb), dir: tb.TempDir()}
	w.a = startBackend(tb, fedtest.BackendOptions{Domain: domainA, InfraHost: infraA, CA: ca, DNS: w.dns, Dir: w.dir,
		Strategy: "allow-list", AllowList: []string{domainB}})
	w.b = startBackend(tb, fedtest.BackendOptions{Domain: domainB, InfraHost: infraB, CA: ca, DNS: w.dns, Dir: w.dir,
		Strategy: "allow-list", AllowList: []string{domainA, domainC}})
	w.dns.SetSRV(domainC, 60, testbed.SRVRecord{Target: infraC, Port: 443, Priority: 10, Weight: 5})
	return w, leaf(tb, ca, infraC)
}

// TestStreamFloodDoesNotStarveOthers has origin C send 1000 concurrent
// requests to a slow component of B over one HTTP/2 connection: the
// ingress lets at most FED_INGRESS_MAX_STREAMS of them run at once (the
// rest wait in the client), and A's calls to B go on meanwhile.
func TestStreamFloodDoesNotStarveOthers(t *testing.T) {
	const flood = 1000
	const slowMs = 3000
	w, certC := newWorldWithC(t)
	var inFlight, peak atomic.Int64
	serve(t, w.b, "brig", func(ctx context.Context, req *bus.Request) ([]byte, error) {
		if req.RPC == "slow" {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
		}
		return component(ctx, req)
	})

	// Strict: requests over the announced limit wait for a stream of this
	// connection instead of failing (or opening another connection).
	cc, err := (&http2.Transport{StrictMaxConcurrentStreams: true}).NewClientConn(dialIngressB(t, w, certC, "h2"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	statuses := make(chan int, flood)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for range flood {
		wg.Go(func() {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+infraB+"/federation/brig/slow", strings.NewReader(fmt.Sprint(slowMs)))
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set(contract.HTTPOriginDomain, domainC)
			req.Header.Set("Content-Type", "application/json")
			resp, err := cc.RoundTrip(req)
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("flood request: %v", err)
				}
				return // cancelled at the end of the test
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		})
	}
	waitFor(t, 10*time.Second, "the flood to fill the connection's streams", func() bool {
		return inFlight.Load() >= int64(ingress.NewConfig().MaxStreams/2) && cc.State().StreamsPending > 0
	})

	t.Run("A's calls to B succeed meanwhile", func(t *testing.T) { callsKeepSucceeding(t, w) })

	t.Run("the flood was held to the stream limit all along", func(t *testing.T) {
		st := cc.State()
		if st.MaxConcurrentStreams != uint32(ingress.NewConfig().MaxStreams) {
			t.Errorf("the ingress announced %d streams, want %d", st.MaxConcurrentStreams, ingress.NewConfig().MaxStreams)
		}
		if n := inFlight.Load(); n == 0 {
			t.Error("the flood ended before A's calls did")
		}
		if p := peak.Load(); p > int64(ingress.NewConfig().MaxStreams) {
			t.Errorf("%d flood requests at the component at once, want at most %d", p, ingress.NewConfig().MaxStreams)
		}
		if st.StreamsPending == 0 {
			t.Error("no flood request waits for a stream")
		}
		for len(statuses) > 0 {
			// Served, or refused by C's own limits: nothing else.
			if s := <-statuses; s != http.StatusOK && s != http.StatusTooManyRequests {
				t.Errorf("a flood request got status %d", s)
			}
		}
	})
}
