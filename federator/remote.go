package federator

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
	"net/netip"
	"strconv"
	"time"

	semconv "go.opentelemetry.io/otel/semconv/v1.39.0"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http2"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/internal/cork"
	"github.com/fedbus/fedbus/internal/iox"
	"github.com/fedbus/fedbus/lookup"
	"github.com/fedbus/fedbus/metrics"
	"github.com/fedbus/fedbus/tlsconf"
	"github.com/fedbus/fedbus/tracing"
)

// connectError marks a failure to reach a target before any request byte
// was sent: the next target may be tried.
type connectError struct {
	tls    bool // the TLS handshake failed
	denied bool // every address was refused by the private-address rule
	err    error
}

func (e *connectError) Error() string { return e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// tooManyError is a remote's 429: the request's error (the remote's body
// as federation-remote-error), and how long the remote asked us to wait.
type tooManyError struct {
	wait time.Duration
	err  *contract.Error
}

func (e *tooManyError) Error() string { return e.err.Error() }
func (e *tooManyError) Unwrap() error { return e.err }

// resolver is what the remote client needs of discovery: the SRV targets
// of a domain in the order to try them, a target's addresses, and reports
// of which targets answered (*discovery.Resolver; tests substitute a
// fake).
type resolver interface {
	SRV(ctx context.Context, domain string) ([]discovery.Target, error)
	Addrs(ctx context.Context, host string) ([]netip.Addr, error)
	ReportSuccess(t discovery.Target)
	ReportFailure(t discovery.Target)
}

// remoteClient calls remote ingresses over mutual TLS with pooled HTTP/2
// connections. The transport dials through the discovery resolver so that
// address lookups and the private-address rule use FED_DNS_SERVER.
type remoteClient struct {
	origin      string // this backend's domain
	resolver    resolver
	certs       *tlsconf.Store
	client      *http.Client
	transport   *http2.Transport
	pool        *connPool
	maxResponse int64
	dialer      net.Dialer
	now         func() time.Time
	// objects holds the answers that do not travel inline (object.go).
	objects *bus.Objects
	metrics *metrics.Metrics // nil: none
}

func newRemoteClient(origin string, cfg Config, res resolver, store *tlsconf.Store, now func() time.Time, m *metrics.Metrics) *remoteClient {
	rc := &remoteClient{origin: origin, resolver: res, certs: store, maxResponse: cfg.MaxResponseBytes, now: now, metrics: m}
	rc.dialer = net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	rc.transport = &http2.Transport{
		IdleConnTimeout:    cfg.IdleConnTimeout,
		DisableCompression: true,
		// No HTTP/2 health-check pings: x/net/http2 (v0.62) keeps a closed
		// connection in memory until its health-check timer fires, which
		// with thousands of remotes costs hundreds of MiB (golang/go#80920).
		// Dead peers are found by TCP keepalive (the dialer's 30 s) and by
		// the request deadline instead.
		ReadIdleTimeout: 0,
	}
	rc.pool = newConnPool(rc.transport, cfg.MaxRemoteConns, func(ctx context.Context, addr string) (net.Conn, error) {
		return rc.dialTLS(ctx, "tcp", addr)
	})
	rc.transport.ConnPool = rc.pool
	rc.client = &http.Client{Transport: rc.transport, CheckRedirect: noRedirects}
	return rc
}

func (rc *remoteClient) closeIdle() { rc.pool.closeIdle() }

// dialTLS resolves host through the resolver, connects to the first
// reachable address and completes the TLS handshake, verifying the server
// certificate for host against FED_TLS_CA.
func (rc *remoteClient) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, &connectError{err: fmt.Errorf("dial %s: %w", addr, err)}
	}
	addrs, err := rc.resolver.Addrs(ctx, host)
	if err != nil {
		return nil, &connectError{denied: errors.Is(err, discovery.ErrPrivateTarget), err: fmt.Errorf("dial %s: %w", addr, err)}
	}
	var lastErr error
	for _, ip := range addrs {
		raw, err := rc.dialer.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err != nil {
			lastErr = err
			continue
		}
		conn := tls.Client(raw, rc.certs.ClientConfigFor(host))
		if err := conn.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			if lookup.Expired(ctx) {
				return nil, fmt.Errorf("tls handshake with %s: %w", addr, context.DeadlineExceeded)
			}
			rc.metrics.TLSFailure(metrics.Outbound, metrics.TLSReason(err))
			return nil, &connectError{tls: true, err: fmt.Errorf("tls handshake with %s: %w", addr, err)}
		}
		if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
			_ = conn.Close()
			rc.metrics.TLSFailure(metrics.Outbound, "protocol")
			return nil, &connectError{tls: true, err: fmt.Errorf("tls handshake with %s: negotiated %q, not h2", addr, p)}
		}
		pc, err := prime(ctx, conn)
		if err != nil {
			_ = conn.Close()
			if lookup.Expired(ctx) {
				return nil, fmt.Errorf("tls handshake with %s: %w", addr, context.DeadlineExceeded)
			}
			if isTLSError(err) {
				// The remote refused our client certificate (TLS 1.3).
				rc.metrics.TLSFailure(metrics.Outbound, metrics.TLSReason(err))
			}
			return nil, &connectError{tls: isTLSError(err), err: fmt.Errorf("tls handshake with %s: %w", addr, err)}
		}
		// Batch the frames of concurrent requests (and each request's
		// HEADERS and DATA) into one TLS record and one write.
		return cork.New(pc), nil
	}
	if lookup.Expired(ctx) {
		return nil, fmt.Errorf("dial %s: %w", addr, context.DeadlineExceeded)
	}
	return nil, &connectError{err: fmt.Errorf("dial %s: %w", addr, lastErr)}
}

// primeWait bounds how long prime waits for the server's first bytes.
const primeWait = time.Second

// primedConn is a TLS connection whose first bytes were read by prime; they
// are returned before the rest.
type primedConn struct {
	*tls.Conn
	pending []byte
}

func (c *primedConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil // the buffer is not kept for the connection's life
		}
		return n, nil
	}
	return c.Conn.Read(b)
}

// prime waits briefly for the server's first bytes (its HTTP/2 SETTINGS).
// In TLS 1.3 the server judges our client certificate after the client's
// handshake is complete, so a refusal arrives as an alert on the first
// read: reading here turns it into a connection failure that can fall back
// to the next target and be reported as federation-tls-error, before any
// request byte was sent. A server that stays silent is not an error.
func prime(ctx context.Context, conn *tls.Conn) (net.Conn, error) {
	deadline := time.Now().Add(primeWait)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	if err := conn.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return nil, err
		}
	}
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return &primedConn{Conn: conn, pending: buf[:n]}, nil
}

// do performs the request against the SRV targets (step, when not nil, is
// told of each hop) of the route's domain in
// RFC 2782 order, falling back to the next target on connection failures.
func (rc *remoteClient) do(ctx context.Context, route contract.Route, ev bus.Event, step func(string), log *slog.Logger) (*answer, error) {
	targets, err := rc.resolver.SRV(ctx, route.Domain)
	if err != nil {
		if errors.Is(err, discovery.ErrInsecure) {
			// A security event rather than an outage: whoever forges the
			// SRV answer chooses where our requests go.
			log.Warn("SRV answer of the remote not validated by DNSSEC, nothing sent (FED_REQUIRE_DNSSEC)",
				"request_id", ev.ID, "remote", route.Domain, "err", err)
		}
		return nil, lookup.Failure(ctx, lookup.Outbound, route.Domain, err)
	}
	if step != nil {
		step(fmt.Sprintf("dns: _wire-server-federator._tcp.%s → %d target(s), first %s:%d", route.Domain, len(targets), targets[0].Host, targets[0].Port))
	}
	var failures []error
	allTLS, allDenied := true, true
	for i, t := range targets {
		a, err := rc.post(ctx, t, route, ev)
		var ce *connectError
		if err == nil {
			rc.resolver.ReportSuccess(t)
			if step != nil {
				step(fmt.Sprintf("https: POST https://%s:%d/federation/%s/%s (mutual TLS, HTTP/2) → 200, %s", t.Host, t.Port, route.Component, route.RPC, sizeText(a)))
			}
			return a, nil
		}
		if !errors.As(err, &ce) || lookup.Expired(ctx) {
			return nil, requestError(ctx, t, err)
		}
		if i < len(targets)-1 { // the request's own line tells the last failure
			log.Info("target unreachable, trying next", "request_id", ev.ID, "target", t.Host, "port", t.Port, "err", err)
		}
		if !ce.denied {
			rc.resolver.ReportFailure(t)
		}
		failures = append(failures, err)
		allTLS = allTLS && ce.tls
		allDenied = allDenied && ce.denied
	}
	joined := errors.Join(failures...)
	switch {
	case lookup.Expired(ctx):
		return nil, contract.Errorf(contract.LabelTimeout, "no target of %s answered in time: %v", route.Domain, joined)
	case allDenied:
		return nil, contract.Errorf(contract.LabelFederationDenied, "every target of %s resolves to a refused address (FED_ALLOW_PRIVATE_TARGETS is false): %v", route.Domain, joined)
	case allTLS:
		return nil, contract.Errorf(contract.LabelTLSError, "TLS handshake failed with every target of %s: %v", route.Domain, joined)
	default:
		return nil, contract.Errorf(contract.LabelConnectionRefused, "no target of %s could be connected to: %v", route.Domain, joined)
	}
}

// post sends one HTTP request to one target.
func (rc *remoteClient) post(ctx context.Context, t discovery.Target, route contract.Route, ev bus.Event) (_ *answer, err error) {
	path := contract.Path(route.Component, route.RPC)
	var span tracing.Span
	if tracing.On() { // off: no span name or attributes made
		ctx, span = tracing.Start(ctx, http.MethodPost+" "+path, trace.SpanKindClient, "",
			tracing.AttrDomain.String(route.Domain), semconv.ServerAddress(t.Host), semconv.ServerPort(int(t.Port)), semconv.HTTPRequestMethodPost)
	}
	var status int
	defer func() {
		if status != 0 && span.Recording() {
			span.SetAttributes(semconv.HTTPResponseStatusCode(status))
		}
		span.End(err, labelOf(err))
	}()
	url := "https://" + net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(ev.Data))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	h := req.Header
	h[contract.HTTPOriginDomain] = []string{rc.origin}
	h[contract.HTTPContentType] = []string{contract.ContentTypeJSON}
	h[contract.HTTPRequestID] = []string{ev.ID}
	if tp := tracing.TraceParent(ctx, ev.TraceParent); tp != "" {
		h[contract.HTTPTraceParent] = []string{tp}
	}
	if dl, ok := ctx.Deadline(); ok {
		h[contract.HTTPRequestTimeout] = []string{strconv.FormatInt(max(time.Until(dl).Milliseconds(), 1), 10)}
	}
	resp, err := rc.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	status = resp.StatusCode
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		return rc.readAnswer(ctx, t, resp, ev)
	case resp.StatusCode >= 300 && resp.StatusCode <= 399:
		return nil, redirectError(t, resp)
	}
	body, err := iox.ReadAllSized(io.LimitReader(resp.Body, min(rc.maxResponse, maxErrorBody)), resp.ContentLength)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		ref := rc.now()
		if date, err := http.ParseTime(resp.Header.Get(contract.HTTPDate)); err == nil {
			ref = date // an HTTP-date Retry-After is on the remote's clock
		}
		return nil, &tooManyError{
			wait: parseRetryAfter(resp.Header.Get(contract.HTTPRetryAfter), ref),
			err:  contract.RemoteError(contract.ParseError(resp.StatusCode, body)),
		}
	}
	return nil, contract.RemoteError(contract.ParseError(resp.StatusCode, body))
}

// maxErrorBody bounds what is read of a remote's error answer: a contract
// error body is far smaller, and only its first 200 bytes are kept when it
// is not one.
const maxErrorBody = 64 << 10

// readAnswer takes a remote's 2xx answer. A JSON body that fits in one
// NATS message (at most FED_MAX_RESPONSE_BYTES, itself at most what one
// message carries) is read and passed on inline. Any other body, not JSON,
// or larger as its Content-Length announces or as reading finds, is
// streamed into the JetStream object store while it arrives
// (streamAnswer, contract section 8).
//
// This is the one place that decides what becomes of an answer too large
// for a NATS message.
func (rc *remoteClient) readAnswer(ctx context.Context, t discovery.Target, resp *http.Response, ev bus.Event) (*answer, error) {
	ct := resp.Header.Get(contract.HTTPContentType)
	limit := rc.inlineLimit(ev)
	if !isJSON(ct) || resp.ContentLength > limit {
		return rc.streamAnswer(ctx, t, ct, resp.Body, resp.ContentLength)
	}
	body, err := iox.ReadAllSized(io.LimitReader(resp.Body, limit+1), resp.ContentLength)
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if int64(len(body)) > limit {
		// Larger than one message after all: what was read goes first.
		return rc.streamAnswer(ctx, t, ct, io.MultiReader(bytes.NewReader(body), resp.Body), resp.ContentLength)
	}
	return &answer{body: body, contentType: contract.ContentTypeJSON}, nil
}

// noRedirects is the http.Client's CheckRedirect: a redirect is never
// followed. A federated request is exactly one request to the discovered
// target; following a remote's 3xx would send the component's body, our
// client certificate and origin to any host our CAs trust, and hand that
// host's answer back as the remote's.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// redirectError is the remote error of a 3xx answer (which is not
// followed): federation-remote-error, the status and the Location in the
// message and in the inner error.
func redirectError(t discovery.Target, resp *http.Response) *contract.Error {
	msg := fmt.Sprintf("%s:%d answered %d %s to %s; redirects are not followed (a federated request goes to the discovered target only)",
		t.Host, t.Port, resp.StatusCode, http.StatusText(resp.StatusCode), contract.Quote(resp.Header.Get("Location")))
	return &contract.Error{
		Code: contract.StatusOf(contract.LabelRemoteError), Label: contract.LabelRemoteError, Message: msg,
		Inner: &contract.Error{Code: resp.StatusCode, Label: contract.LabelUnknownError, Message: "redirect (" + strconv.Itoa(resp.StatusCode) + ") not followed"},
	}
}

// requestError maps a failure after the connection was made.
func requestError(ctx context.Context, t discovery.Target, err error) error {
	var (
		be *contract.Error
		tm *tooManyError
	)
	switch {
	case errors.As(err, &tm):
		return tm // the caller remembers the wait; it wraps the contract error
	case errors.As(err, &be):
		return be
	case lookup.Expired(ctx) || errors.Is(err, context.DeadlineExceeded):
		return contract.Errorf(contract.LabelTimeout, "no answer from %s:%d in time", t.Host, t.Port)
	case isTLSError(err):
		return contract.Errorf(contract.LabelTLSError, "TLS with %s:%d: %v", t.Host, t.Port, err)
	default:
		return contract.Errorf(contract.LabelConnectionRefused, "request to %s:%d failed: %v", t.Host, t.Port, err)
	}
}

func isTLSError(err error) bool {
	var (
		alert  tls.AlertError
		verify *tls.CertificateVerificationError
		ua     x509.UnknownAuthorityError
		hn     x509.HostnameError
		rh     tls.RecordHeaderError
		op     *net.OpError
	)
	if errors.As(err, &op) && op.Op == "remote error" { // a TLS alert from the peer
		return true
	}
	return errors.As(err, &alert) || errors.As(err, &verify) || errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &rh)
}
