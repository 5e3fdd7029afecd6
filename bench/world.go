package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/net/http2"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// The two backends of the benchmark.
const (
	domainA = "a.example.com"
	domainB = "b.example.com"
	infraA  = "fed.a-infra.example.net"
	infraB  = "fed.b-infra.example.net"
	// component and rpc of the echo component.
	echoComponent = "brig"
	echoRPC       = "echo"
	echoPath      = contract.PathPrefix + echoComponent + "/" + echoRPC
)

// world is what the scenarios share: a CA, a DNS server, backends A and B
// (each with embedded NATS, federator and ingress), the echo component on
// B, and the certificates of A (client) and B (server) that the plain
// HTTPS scenarios use too.
type world struct {
	log        *slog.Logger // the services' logger
	dir        string
	ca         *testbed.CA
	dns        *testbed.DNS
	a, b       *fedtest.Backend
	clientCert tls.Certificate // A's certificate, SAN infraA
	serverCert tls.Certificate // B's certificate, SAN infraB
	pool       *x509.CertPool

	mu        sync.Mutex
	benchNATS *server.Server                // the nats and bus scenarios' server
	closers   []func(context.Context) error // run in reverse order by close
}

// newWorld starts the DNS server and the backends A and B with the echo
// component on B.
func newWorld(ctx context.Context, log *slog.Logger) (_ *world, err error) {
	w := &world{log: log}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err = errors.Join(err, w.close(cctx))
		}
	}()
	if w.dir, err = os.MkdirTemp("", "fedbench-"); err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	w.onClose(func(context.Context) error { return os.RemoveAll(w.dir) })
	if w.ca, err = testbed.NewCA("fedbench CA"); err != nil {
		return nil, err
	}
	w.pool = x509.NewCertPool()
	w.pool.AddCert(w.ca.Cert)
	if w.dns, err = testbed.NewDNS(); err != nil {
		return nil, err
	}
	if err := w.dns.Start(); err != nil {
		return nil, fmt.Errorf("start dns: %w", err)
	}
	w.onClose(func(context.Context) error { return w.dns.Stop() })
	if w.a, err = w.startBackend(domainA, infraA, domainB); err != nil {
		return nil, err
	}
	if w.b, err = w.startBackend(domainB, infraB, domainA); err != nil {
		return nil, err
	}
	if w.clientCert, err = tls.LoadX509KeyPair(w.a.Files.Cert, w.a.Files.Key); err != nil {
		return nil, fmt.Errorf("load A's certificate: %w", err)
	}
	if w.serverCert, err = tls.LoadX509KeyPair(w.b.Files.Cert, w.b.Files.Key); err != nil {
		return nil, fmt.Errorf("load B's certificate: %w", err)
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	srv, err := bus.Serve(sctx, w.b.NATS, w.b.Subjects, echoComponent, echoHandler, log)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("echo component: %w", err)
	}
	w.onClose(func(ctx context.Context) error {
		defer cancel()
		return srv.Shutdown(ctx)
	})
	return w, nil
}

func (w *world) startBackend(domain, infra, peer string) (*fedtest.Backend, error) {
	be, err := fedtest.StartBackend(fedtest.BackendOptions{
		Domain: domain, InfraHost: infra, CA: w.ca, DNS: w.dns, Dir: w.dir,
		Strategy: "allow-list", AllowList: []string{peer}, Logger: w.log, Env: unlimitedEnv,
	})
	if err != nil {
		return nil, err
	}
	w.onClose(be.Close)
	if err := unlimited(be); err != nil {
		return nil, err
	}
	return be, nil
}

// unlimitedEnv lifts the ingress's per-certificate limits
// (FED_INGRESS_CERT_RATE and FED_INGRESS_CERT_CONCURRENCY): the benchmark's
// one client certificate sends far more than one peer's default share.
var unlimitedEnv = map[string]string{"FED_INGRESS_CERT_RATE": "0", "FED_INGRESS_CERT_CONCURRENCY": "0"}

// unlimited lifts the ingress's per-origin rate and concurrency limits
// (FED_INGRESS_ORIGIN_RATE and friends): the benchmark measures the
// request path's capacity, not the limiter's setting.
func unlimited(be *fedtest.Backend) error {
	if err := be.Ingress.SetOriginLimits(0, 0, 0); err != nil {
		return fmt.Errorf("backend %s: %w", be.Domain, err)
	}
	return nil
}

// onClose registers f to run at close.
func (w *world) onClose(f func(context.Context) error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closers = append(w.closers, f)
}

// close runs the registered closers in reverse order.
func (w *world) close(ctx context.Context) error {
	w.mu.Lock()
	closers := slices.Clone(w.closers)
	w.closers = nil
	w.mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// echoHandler is the component of the bus scenarios: it returns the body.
func echoHandler(_ context.Context, req *bus.Request) ([]byte, error) {
	if req.RPC != echoRPC {
		return nil, contract.Errorf(contract.LabelInvalidEndpoint, "unknown rpc %s", req.RPC)
	}
	return req.Body, nil
}

// httpEcho is the echo of the plain HTTP scenarios: the request body back
// as application/json.
func httpEcho(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h := w.Header()
	h.Set("Content-Type", contract.ContentTypeJSON)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// serveHTTP serves srv on a new 127.0.0.1 listener (TLS when srv has a
// TLSConfig) until close, and returns the address.
func (w *world) serveHTTP(srv *http.Server) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			done <- srv.ServeTLS(ln, "", "")
		} else {
			done <- srv.Serve(ln)
		}
	}()
	w.onClose(func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		return err
	})
	return ln.Addr().String(), nil
}

// h2Client returns an HTTP/2 client with A's certificate that trusts the
// CA and verifies the server as infraB: the same transport the federator
// uses (golang.org/x/net/http2).
func (w *world) h2Client() *http.Client {
	tr := &http2.Transport{
		TLSClientConfig: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{w.clientCert},
			RootCAs:      w.pool,
			ServerName:   infraB,
			NextProtos:   []string{"h2"},
		},
		DisableCompression: true,
	}
	w.onClose(func(context.Context) error { tr.CloseIdleConnections(); return nil })
	return &http.Client{Transport: tr}
}

// httpScenario is a scenario that POSTs the body to url with the headers a
// federator sends, and expects the body back with 200.
func httpScenario(name string, client *http.Client, url string) *scenario {
	return &scenario{name: name, do: func(ctx context.Context, body, buf []byte) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("build request: %w", err)
		}
		h := req.Header
		h[contract.HTTPOriginDomain] = []string{domainA}
		h[contract.HTTPContentType] = []string{contract.ContentTypeJSON}
		h[contract.HTTPRequestID] = []string{bus.NewID()}
		h[contract.HTTPRequestTimeout] = []string{"10000"}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		n, rerr := readInto(resp.Body, buf)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d: %.200s", resp.StatusCode, buf[:n])
		}
		if rerr != nil {
			return rerr
		}
		return checkEcho(body, buf[:n])
	}}
}

// readInto reads r to EOF into buf.
func readInto(r io.Reader, buf []byte) (int, error) {
	n := 0
	for {
		if n == len(buf) {
			return n, errors.New("response larger than the buffer")
		}
		m, err := r.Read(buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("read response: %w", err)
		}
	}
}

func checkEcho(want, got []byte) error {
	if !bytes.Equal(want, got) {
		return fmt.Errorf("echo mismatch: sent %d bytes, got %d", len(want), len(got))
	}
	return nil
}
