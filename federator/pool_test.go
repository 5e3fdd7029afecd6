package federator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/fedbus/fedbus/test/testbed"
)

// poolServer is an HTTP/2 TLS server for the pool tests: any host name
// *.pool.test reaches it (so each name is a connection of its own), and it
// counts the connections it accepted and saw closed.
type poolServer struct {
	srv            *httptest.Server
	opened, closed atomic.Int32
	release        chan struct{} // "block" requests wait for it
}

func startPoolServer(t *testing.T) (*poolServer, *x509.CertPool) {
	t.Helper()
	ca, err := testbed.NewCA("pool CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(testbed.LeafOptions{}, "*.pool.test")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := leaf.TLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	ps := &poolServer{release: make(chan struct{})}
	ps.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			<-ps.release
		}
		_, _ = io.WriteString(w, "ok")
	}))
	ps.srv.EnableHTTP2 = true
	ps.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	ps.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			ps.opened.Add(1)
		case http.StateClosed:
			ps.closed.Add(1)
		}
	}
	ps.srv.StartTLS()
	t.Cleanup(ps.srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return ps, pool
}

// newPoolClient returns a client whose connections come from a connPool
// of at most max, each host name dialled to the server.
func newPoolClient(t *testing.T, ps *poolServer, roots *x509.CertPool, max int) (*http.Client, *connPool) {
	t.Helper()
	tr := &http2.Transport{}
	addr := ps.srv.Listener.Addr().String()
	p := newConnPool(tr, max, func(ctx context.Context, hostport string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(hostport)
		d := tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: host, NextProtos: []string{"h2"}}}
		return d.DialContext(ctx, "tcp", addr)
	})
	tr.ConnPool = p
	t.Cleanup(p.closeIdle)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}, p
}

func get(t *testing.T, c *http.Client, host, path string) {
	t.Helper()
	resp, err := c.Get("https://" + host + ":443" + path)
	if err != nil {
		t.Error(err)
		return
	}
	defer resp.Body.Close()
	if body, _ := io.ReadAll(resp.Body); string(body) != "ok" {
		t.Errorf("%s: got %q", host, body)
	}
}

// TestConnPoolBoundsIdleConnections: calling more remotes than
// FED_MAX_REMOTE_CONNS keeps at most that many connections open, closing
// the least recently used; a connection in use is reused, not re-opened.
func TestConnPoolBoundsIdleConnections(t *testing.T) {
	ps, roots := startPoolServer(t)
	c, p := newPoolClient(t, ps, roots, 5)
	for i := range 20 {
		get(t, c, fmt.Sprintf("r%d.pool.test", i), "/")
		if n := p.open(); n > 5 {
			t.Fatalf("after %d remotes %d connections are open, want at most 5", i+1, n)
		}
	}
	// The most recent remote is still connected: calling it again opens
	// nothing.
	before := ps.opened.Load()
	get(t, c, "r19.pool.test", "/")
	if got := ps.opened.Load(); got != before {
		t.Errorf("calling a pooled remote again opened %d connections", got-before)
	}
	if ps.opened.Load() != 20 {
		t.Errorf("server accepted %d connections, want 20 (one per remote)", ps.opened.Load())
	}
	waitFor(t, 5*time.Second, "the evicted connections to close", func() bool { return ps.closed.Load() == 15 })
}

// TestConnPoolKeepsBusyConnections: connections with a request in flight
// are never closed to make room; they are once idle.
func TestConnPoolKeepsBusyConnections(t *testing.T) {
	ps, roots := startPoolServer(t)
	c, p := newPoolClient(t, ps, roots, 2)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() { get(t, c, fmt.Sprintf("busy%d.pool.test", i), "/block") })
	}
	waitFor(t, 5*time.Second, "three busy connections", func() bool { return p.open() == 3 })
	get(t, c, "idle.pool.test", "/")
	if n := p.open(); n != 4 {
		t.Errorf("%d connections open with three busy and one new, want 4 (no busy one closed)", n)
	}
	close(ps.release)
	wg.Wait() // every blocked request got its answer
	get(t, c, "last.pool.test", "/")
	if n := p.open(); n != 2 {
		t.Errorf("%d connections open once idle, want the limit, 2", n)
	}
}

func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
