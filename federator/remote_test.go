package federator

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/test/testbed"
)

// fakeResolver is the remote client's resolver: SRV targets and addresses
// set by the test, and the reports it gets.
type fakeResolver struct {
	mu        sync.Mutex
	targets   map[string][]discovery.Target // by domain, in the order to try
	refused   map[string]bool               // hosts whose every address is refused (private)
	successes []string                      // host:port reported
	failures  []string
}

func newFakeResolver() *fakeResolver {
	return &fakeResolver{targets: map[string][]discovery.Target{}, refused: map[string]bool{}}
}

func (r *fakeResolver) SRV(_ context.Context, domain string) ([]discovery.Target, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ts, ok := r.targets[domain]
	if !ok {
		return nil, fmt.Errorf("discover %s: %w", domain, discovery.ErrNotFound)
	}
	return slices.Clone(ts), nil
}

// Addrs: every host is on 127.0.0.1, unless refused.
func (r *fakeResolver) Addrs(_ context.Context, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refused[host] {
		return nil, fmt.Errorf("resolve %s: %w", host, discovery.ErrPrivateTarget)
	}
	return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
}

func (r *fakeResolver) ReportSuccess(t discovery.Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.successes = append(r.successes, net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))))
}

func (r *fakeResolver) ReportFailure(t discovery.Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))))
}

func (r *fakeResolver) reports() (successes, failures []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.successes), slices.Clone(r.failures)
}

// remoteWorld is a remote client of origin.test (its certificate from
// ca) and the local TLS servers standing for remote targets.
type remoteWorld struct {
	ca  *testbed.CA
	res *fakeResolver
	rc  *remoteClient
}

const remoteOrigin = "origin.test"

func newRemoteWorld(tb testing.TB, maxResponse int64) *remoteWorld {
	tb.Helper()
	ca, err := testbed.NewCA("remote test CA")
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := ca.Issue(testbed.LeafOptions{}, "fed.origin-infra.test")
	if err != nil {
		tb.Fatal(err)
	}
	cfg := NewConfig()
	if maxResponse > 0 {
		cfg.MaxResponseBytes = maxResponse
	}
	w := &remoteWorld{ca: ca, res: newFakeResolver()}
	w.rc = newRemoteClient(remoteOrigin, cfg, w.res, ca.CertStore(tb, leaf), time.Now, nil)
	tb.Cleanup(w.rc.closeIdle)
	return w
}

// serverOptions describe one remote target.
type serverOptions struct {
	issuer *testbed.CA // of the server certificate; default the world's CA
	// clientCAs, when set, are the only CAs the server accepts client
	// certificates from (it refuses ours with a TLS alert).
	clientCAs *x509.CertPool
	handler   http.HandlerFunc // default: 200 "ok"
}

// target starts an HTTP/2 TLS server for host and returns its target.
func (w *remoteWorld) target(tb testing.TB, host string, o serverOptions) discovery.Target {
	tb.Helper()
	issuer := o.issuer
	if issuer == nil {
		issuer = w.ca
	}
	leaf, err := issuer.Issue(testbed.LeafOptions{}, host)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := leaf.TLSCertificate()
	if err != nil {
		tb.Fatal(err)
	}
	h := o.handler
	if h == nil {
		h = func(rw http.ResponseWriter, _ *http.Request) {
			rw.Header().Set(contract.HTTPContentType, contract.ContentTypeJSON)
			_, _ = rw.Write([]byte(`"ok"`))
		}
	}
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if o.clientCAs != nil {
		srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		srv.TLS.ClientCAs = o.clientCAs
	}
	srv.Config.ErrorLog = slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)
	srv.StartTLS()
	tb.Cleanup(srv.Close)
	return discovery.Target{Host: host, Port: uint16(srv.Listener.Addr().(*net.TCPAddr).Port)}
}

// closedTarget is a target on a loopback port where nothing listens.
func closedTarget(tb testing.TB, host string) discovery.Target {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return discovery.Target{Host: host, Port: uint16(port)}
}

// do sends one brig.echo request to domain and returns the inline body.
func (w *remoteWorld) do(tb testing.TB, domain string) ([]byte, error) {
	tb.Helper()
	a, err := w.answer(tb, domain)
	if err != nil {
		return nil, err
	}
	return a.body, nil
}

// answer sends one brig.echo request to domain and returns the answer.
func (w *remoteWorld) answer(tb testing.TB, domain string) (*answer, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev := bus.Event{ID: "req-remote", Source: "/brig", Type: contract.TypeRequest, Data: []byte(`{"q":1}`)}
	return w.rc.do(ctx, contract.Route{Component: "brig", RPC: "echo", Domain: domain}, ev, nil, slog.New(slog.DiscardHandler))
}

func hostPort(t discovery.Target) string { return net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))) }

// wantLabel checks that err is the contract error of label.
func wantLabel(tb testing.TB, err error, label string) *contract.Error {
	tb.Helper()
	var e *contract.Error
	if !errors.As(err, &e) || e.Label != label || e.Code != contract.StatusOf(label) {
		tb.Fatalf("error = %v, want %s", err, label)
	}
	return e
}

// TestRemoteClientTargets: connection priming, fallback from one SRV
// target to the next, and the label when every target fails.
func TestRemoteClientTargets(t *testing.T) {
	w := newRemoteWorld(t, 0)
	otherCA, err := testbed.NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	onlyOther := x509.NewCertPool()
	onlyOther.AddCert(otherCA.Cert)
	good := w.target(t, "good.b-infra.test", serverOptions{})
	// Trusted server that refuses our client certificate: TLS 1.3 sends
	// the alert after our side of the handshake is complete.
	refuser := w.target(t, "refuser.b-infra.test", serverOptions{clientCAs: onlyOther})
	untrusted := w.target(t, "untrusted.b-infra.test", serverOptions{issuer: otherCA})
	closed := closedTarget(t, "closed.b-infra.test")
	closed2 := closedTarget(t, "closed2.b-infra.test")
	private := discovery.Target{Host: "private.b-infra.test", Port: 443}
	private2 := discovery.Target{Host: "private2.b-infra.test", Port: 443}
	w.res.refused[private.Host], w.res.refused[private2.Host] = true, true

	tests := []struct {
		name      string
		targets   []discovery.Target
		label     string   // "" for success
		successes []string // reports to discovery
		failures  []string
	}{
		{"one good target", []discovery.Target{good}, "", []string{hostPort(good)}, nil},
		{"client certificate refused, next target", []discovery.Target{refuser, good}, "", []string{hostPort(good)}, []string{hostPort(refuser)}},
		{"connection refused, next target", []discovery.Target{closed, good}, "", []string{hostPort(good)}, []string{hostPort(closed)}},
		{"private address, next target", []discovery.Target{private, good}, "", []string{hostPort(good)}, nil},
		{"client certificate refused by the only target", []discovery.Target{refuser}, contract.LabelTLSError, nil, []string{hostPort(refuser)}},
		{"every target a TLS failure", []discovery.Target{refuser, untrusted}, contract.LabelTLSError, nil, []string{hostPort(refuser), hostPort(untrusted)}},
		{"TLS failure and connection refused", []discovery.Target{untrusted, closed}, contract.LabelConnectionRefused, nil, []string{hostPort(untrusted), hostPort(closed)}},
		{"connection refused and TLS failure", []discovery.Target{closed, refuser}, contract.LabelConnectionRefused, nil, []string{hostPort(closed), hostPort(refuser)}},
		{"every target refuses connections", []discovery.Target{closed, closed2}, contract.LabelConnectionRefused, nil, []string{hostPort(closed), hostPort(closed2)}},
		{"every address private", []discovery.Target{private, private2}, contract.LabelFederationDenied, nil, nil},
		{"private address and connection refused", []discovery.Target{private, closed}, contract.LabelConnectionRefused, nil, []string{hostPort(closed)}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			domain := "b" + strconv.Itoa(i) + ".test"
			w.res.mu.Lock()
			w.res.targets[domain] = tc.targets
			w.res.successes, w.res.failures = nil, nil
			w.res.mu.Unlock()
			body, err := w.do(t, domain)
			if tc.label == "" {
				if err != nil || string(body) != `"ok"` {
					t.Fatalf("do = %q, %v; want success", body, err)
				}
			} else {
				e := wantLabel(t, err, tc.label)
				if tc.label == contract.LabelFederationDenied && !strings.Contains(e.Message, "FED_ALLOW_PRIVATE_TARGETS") {
					t.Errorf("message %q does not name FED_ALLOW_PRIVATE_TARGETS", e.Message)
				}
			}
			successes, failures := w.res.reports()
			if !slices.Equal(successes, tc.successes) || !slices.Equal(failures, tc.failures) {
				t.Errorf("reported successes %v, failures %v; want %v, %v", successes, failures, tc.successes, tc.failures)
			}
		})
	}
}

// TestRemoteClientRefusesRedirects: a remote answering a redirect to
// another host that our CAs trust gets no second request: the component
// gets federation-remote-error with the status, the other host receives
// nothing.
func TestRemoteClientRefusesRedirects(t *testing.T) {
	w := newRemoteWorld(t, 0)
	var elsewhere atomic.Int32
	other := w.target(t, "other.c-infra.test", serverOptions{handler: func(rw http.ResponseWriter, _ *http.Request) {
		elsewhere.Add(1)
		_, _ = rw.Write([]byte(`"from elsewhere"`))
	}})
	for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			var asked atomic.Int32
			location := "https://" + hostPort(other) + "/federation/brig/echo"
			redirector := w.target(t, "redirect.b-infra.test", serverOptions{handler: func(rw http.ResponseWriter, _ *http.Request) {
				asked.Add(1)
				rw.Header().Set("Location", location)
				rw.WriteHeader(status)
			}})
			domain := "redirect" + strconv.Itoa(status) + ".test"
			w.res.mu.Lock()
			w.res.targets[domain] = []discovery.Target{redirector}
			w.res.mu.Unlock()
			_, err := w.do(t, domain)
			e := wantLabel(t, err, contract.LabelRemoteError)
			if !strings.Contains(e.Message, strconv.Itoa(status)) || !strings.Contains(e.Message, location) {
				t.Errorf("message %q does not keep the status and the location", e.Message)
			}
			if e.Inner == nil || e.Inner.Code != status {
				t.Errorf("inner %+v, want code %d", e.Inner, status)
			}
			if n := asked.Load(); n != 1 {
				t.Errorf("the remote got %d requests, want 1", n)
			}
			if n := elsewhere.Load(); n != 0 {
				t.Fatalf("the host of the redirect got %d requests, want none", n)
			}
		})
	}
}

// TestRemoteClientLargeAnswers: a 2xx JSON answer of at most
// FED_MAX_RESPONSE_BYTES travels inline; a larger one, whether its size is
// announced (Content-Length) or found while reading, and any answer that
// is not JSON, go to the object store (contract section 8) with their
// bytes and content type; one over FED_MAX_OBJECT_BYTES is
// payload-too-large; without an object store such answers fail.
func TestRemoteClientLargeAnswers(t *testing.T) {
	const limit, maxObject = 4096, 64 << 10
	w := newRemoteWorld(t, limit)
	_, _, js := startJetStream(t)
	objs, err := bus.NewObjects(js, bus.ObjectsConfig{MaxBytes: maxObject})
	if err != nil {
		t.Fatal(err)
	}
	payload := func(n int) []byte { return bytes.Repeat([]byte("x"), n) }
	serve := func(n int, ct string, announce bool) http.HandlerFunc {
		return func(rw http.ResponseWriter, _ *http.Request) {
			rw.Header().Set(contract.HTTPContentType, ct)
			if announce {
				rw.Header().Set("Content-Length", strconv.Itoa(n))
			}
			rw.WriteHeader(http.StatusOK)
			// Written in pieces: without Content-Length, HTTP/2 sends the
			// length of nothing.
			body := payload(n)
			for sent := 0; sent < n; sent += 1024 {
				_, _ = rw.Write(body[sent:min(sent+1024, n)])
				if f, ok := rw.(http.Flusher); ok {
					f.Flush()
				}
			}
		}
	}
	const octets = contract.ContentTypeOctetStream
	tests := []struct {
		name     string
		size     int
		ct       string
		announce bool
		noStore  bool
		object   bool   // the answer is an object
		label    string // error
	}{
		{"JSON at the limit, announced", limit, contract.ContentTypeJSON, true, false, false, ""},
		{"JSON at the limit, not announced", limit, contract.ContentTypeJSON, false, false, false, ""},
		{"JSON with charset at the limit", limit, "application/json; charset=utf-8", true, false, false, ""},
		{"JSON over the limit, announced", limit + 1, contract.ContentTypeJSON, true, false, true, ""},
		{"JSON over the limit, not announced", 3 * limit, contract.ContentTypeJSON, false, false, true, ""},
		{"an octet stream of one byte", 1, octets, true, false, true, ""},
		{"an octet stream, not announced", 5 * limit, octets, false, false, true, ""},
		{"over FED_MAX_OBJECT_BYTES, announced", maxObject + 1, octets, true, false, false, contract.LabelPayloadTooLarge},
		{"over FED_MAX_OBJECT_BYTES, not announced", 2 * maxObject, octets, false, false, false, contract.LabelPayloadTooLarge},
		{"no object store", 2 * limit, octets, true, true, false, contract.LabelServerError},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w.rc.objects = objs
			if tc.noStore {
				w.rc.objects = nil
			}
			domain := "big" + strconv.Itoa(i) + ".test"
			w.res.mu.Lock()
			w.res.targets[domain] = []discovery.Target{w.target(t, "big.b-infra.test", serverOptions{handler: serve(tc.size, tc.ct, tc.announce)})}
			w.res.mu.Unlock()
			a, err := w.answer(t, domain)
			if tc.label != "" {
				e := wantLabel(t, err, tc.label)
				if tc.label == contract.LabelPayloadTooLarge && !strings.Contains(e.Message, "FED_MAX_OBJECT_BYTES") {
					t.Errorf("message %q does not name FED_MAX_OBJECT_BYTES", e.Message)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.object {
				if !a.object.IsZero() || !bytes.Equal(a.body, payload(tc.size)) {
					t.Fatalf("answer %d bytes inline, object %v; want %d bytes inline", len(a.body), a.object, tc.size)
				}
				return
			}
			if a.object.IsZero() || a.object.Size != int64(tc.size) || a.contentType != tc.ct {
				t.Fatalf("answer object %v (%s), want %d bytes of %s", a.object, a.contentType, tc.size, tc.ct)
			}
			r, err := objs.Open(context.Background(), a.object)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var got bytes.Buffer
			if _, err := r.WriteTo(&got); err != nil || !bytes.Equal(got.Bytes(), payload(tc.size)) {
				t.Fatalf("object: %d bytes, %v", got.Len(), err)
			}
		})
	}
}
