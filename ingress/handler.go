package ingress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/internal/iox"
	"github.com/fedbus/fedbus/lookup"
	"github.com/fedbus/fedbus/metrics"
	"github.com/fedbus/fedbus/tracing"
)

// request is the state of one inbound request, filled as the checks pass.
type request struct {
	id        string // ce-id and request_id of the log lines
	start     time.Time
	deadline  time.Time
	component string
	rpc       string
	origin    string
	san       string // the certificate name that matched an SRV target
	cause     error  // detail of a failure, logged but not sent to the peer
	// retryAfter is the Retry-After of a too-many-requests answer.
	retryAfter time.Duration
	// closeConn: the peer failed the certificate check; its connection is
	// closed after the answer (it has nothing more to send us).
	closeConn bool
	// published: the request passed every check and went to the bus (a
	// failure before is a refusal).
	published bool
	span      tracing.Span
}

// ServeHTTP handles one federated request: it runs the contract's checks
// in order (see the package documentation), publishes the request to the
// local component and writes its answer. Every request gets exactly one
// response; a failure is the contract's JSON error body with the error's
// status. The client certificate is read from r.TLS.
func (in *Ingress) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	in.servedRequest(r)
	req := &request{start: time.Now()}
	req.id = r.Header.Get(contract.HTTPRequestID)
	if !contract.ValidRequestID(req.id) {
		req.id = bus.NewID()
	}
	req.deadline = in.deadlineOf(req.start, r.Header.Get(contract.HTTPRequestTimeout))
	// No per-request logger on the hot path: each line written carries the
	// request id itself.
	log := in.log
	if tracing.On() { // off: no attributes made
		ctx, span := tracing.Start(r.Context(), "ingress", trace.SpanKindServer, contract.CleanTraceParent(r.Header.Get(contract.HTTPTraceParent)),
			tracing.AttrRequestID.String(req.id))
		req.span = span
		if span.Recording() {
			r = r.WithContext(ctx)
		}
	}

	reply, err := in.safeHandle(w, r, req, log)
	in.record(req, err)
	if err != nil {
		if req.closeConn {
			// The peer may still be sending: its connection closes
			// gracefully, so that it reads the whole refusal.
			if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
				markLinger(c)
			}
		}
		in.writeError(w, req, log, err)
		return
	}
	if !reply.Object.IsZero() {
		in.writeObject(w, r, req, log, reply) // object.go
		return
	}
	body := reply.Data
	w.Header().Set(contract.HTTPContentType, contentType(reply.DataContentType, contract.ContentTypeJSON))
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if _, werr := w.Write(body); werr != nil {
		log.Info("writing response failed", "request_id", req.id, "err", werr)
	}
	if log.Enabled(r.Context(), slog.LevelInfo) { // the arguments cost allocations
		log.Info("request served", "request_id", req.id, "status", http.StatusOK,
			"fed_component", req.component, "rpc", req.rpc, "origin", req.origin, "san", req.san,
			"duration_ms", time.Since(req.start).Milliseconds())
	}
}

// record counts the request in the metrics, the micro service stats and
// its span.
func (in *Ingress) record(req *request, e *contract.Error) {
	d := time.Since(req.start)
	var err error
	if e != nil {
		err = e
		if !req.published {
			in.metrics.Refused(metrics.Inbound, e.Label)
		}
	}
	in.metrics.In(req.origin, req.component, err, d)
	in.stats.Record(d, e)
	req.span.End(err, labelOf(e))
}

// labelOf returns the label of e ("" for nil).
func labelOf(e *contract.Error) string {
	if e == nil {
		return ""
	}
	return e.Label
}

// safeHandle runs handle and turns a panic into a server error, so that
// the request still gets its one response.
func (in *Ingress) safeHandle(w http.ResponseWriter, r *http.Request, req *request, log *slog.Logger) (reply bus.Event, err *contract.Error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("handler panicked", "request_id", req.id, "panic", fmt.Sprint(p))
			reply, err = bus.Event{}, contract.Errorf(contract.LabelServerError, "internal error")
		}
	}()
	return in.handle(w, r, req)
}

// writeError writes the contract error body with its status.
func (in *Ingress) writeError(w http.ResponseWriter, req *request, log *slog.Logger, e *contract.Error) {
	e = e.Sanitized()
	if e.Code < 400 || e.Code > 599 {
		c := *e
		c.Code = http.StatusInternalServerError
		e = &c
	}
	body := e.JSON()
	h := w.Header()
	h.Set(contract.HTTPContentType, contract.ContentTypeJSON)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	if req.closeConn {
		// HTTP/1.1 closes after the answer, HTTP/2 sends GOAWAY.
		h.Set("Connection", "close")
	}
	if req.retryAfter > 0 && e.Label == contract.LabelTooManyRequests {
		h.Set(contract.HTTPRetryAfter, strconv.FormatInt(retryAfterSeconds(req.retryAfter), 10))
	}
	w.WriteHeader(e.Code)
	if _, err := w.Write(body); err != nil {
		log.Info("writing error response failed", "request_id", req.id, "err", err)
	}
	level := slog.LevelInfo
	switch {
	case e.Code >= 500:
		level = slog.LevelWarn
	case e.Label == contract.LabelTooManyRequests:
		level = slog.LevelDebug // admit warns about the origin, sparingly
	}
	if !log.Enabled(context.Background(), level) {
		return
	}
	attrs := []any{"request_id", req.id, "status", e.Code, "label", e.Label, "message", e.Message,
		"fed_component", req.component, "rpc", req.rpc, "origin", req.origin,
		"duration_ms", time.Since(req.start).Milliseconds()}
	if req.cause != nil {
		attrs = append(attrs, "cause", req.cause.Error())
	}
	log.Log(context.Background(), level, "request failed", attrs...)
}

// handle runs the checks and the NATS exchange and returns the
// component's fedbus.response or the contract error to answer with. It
// writes nothing.
func (in *Ingress) handle(w http.ResponseWriter, r *http.Request, req *request) (bus.Event, *contract.Error) {
	// 1. Client certificate.
	leaf, err := clientCertificate(r.TLS)
	if err != nil {
		req.closeConn = true
		return bus.Event{}, err
	}
	// 2. Method, query string, path.
	if r.Method != http.MethodPost {
		return bus.Event{}, contract.Errorf(contract.LabelInvalidEndpoint, "method %s is not POST", contract.Quote(r.Method))
	}
	if r.URL == nil {
		return bus.Event{}, contract.Errorf(contract.LabelInvalidEndpoint, "request without URL")
	}
	if r.URL.RawQuery != "" || r.URL.ForceQuery {
		return bus.Event{}, contract.Errorf(contract.LabelInvalidEndpoint, "a query string is not allowed")
	}
	if r.URL.Opaque != "" {
		return bus.Event{}, contract.Errorf(contract.LabelInvalidEndpoint, "path %s is not %s<component>/<rpc>", contract.Quote(r.URL.Opaque), contract.PathPrefix)
	}
	batch := r.URL.EscapedPath() == contract.BatchPath // fedbus notification batch (section 6)
	if !batch {
		req.component, req.rpc, err = contract.ParsePath(r.URL.EscapedPath(), in.known)
		if err != nil {
			return bus.Event{}, err
		}
	}
	req.span.SetName("ingress " + req.component + "." + req.rpc)
	req.span.SetAttributes(tracing.AttrComponent.String(req.component), tracing.AttrRPC.String(req.rpc))
	// 3. Origin domain.
	req.origin, err = originDomain(r.Header)
	if err != nil {
		return bus.Event{}, err
	}
	// 4. Federation strategy.
	if perr := in.policy.Check(req.origin); perr != nil {
		return bus.Event{}, contract.AsError(perr)
	}
	ctx, cancel := context.WithDeadline(r.Context(), req.deadline)
	defer cancel()
	// The certificate's limits, before any DNS lookup: the certificate is
	// verified, so nobody else can spend its budget, and it gets one
	// budget whatever origins it claims.
	cert := fingerprint(leaf)
	certSlot, err := in.admitCert(req, cert)
	if err != nil {
		return bus.Event{}, err
	}
	if certSlot != nil {
		defer certSlot.release(cert)
	}
	// 5 and 6. Discovery, and the certificate's names against the targets.
	req.san, err = in.authorize(ctx, req, leaf)
	if err != nil {
		if fails := in.authFails.Load(); fails != nil {
			fails.spend(cert) // each failure cost lookups
		}
		return bus.Event{}, err
	}
	in.contacted(req.origin)
	// The origin's limits, now that the origin is proven: nobody can
	// spend another origin's budget.
	release, err := in.admit(req)
	if err != nil {
		return bus.Event{}, err
	}
	defer release()
	req.span.SetAttributes(tracing.AttrDomain.String(req.origin))
	in.metrics.InFlight(metrics.Inbound, req.origin, 1)
	defer in.metrics.InFlight(metrics.Inbound, req.origin, -1)
	if batch {
		return in.serveBatch(ctx, w, r, req)
	}
	// Per-request authorization (after the origin is proven, so that the
	// rules are not revealed to anybody else): the origin's rules must
	// allow this component and rpc.
	if perr := in.policy.Authorize(req.origin, req.component, req.rpc); perr != nil {
		return bus.Event{}, contract.AsError(perr)
	}
	// 7. Body.
	body, err := in.readBody(w, r, req)
	if err != nil {
		return bus.Event{}, err
	}
	traceParent := contract.CleanTraceParent(r.Header.Get(contract.HTTPTraceParent))
	if r.Header.Get(contract.HTTPNotificationID) != "" {
		return in.storeNotification(ctx, w, req, r.Header, traceParent, body)
	}
	return in.publish(ctx, req, traceParent, body)
}

// clientCertificate returns the verified leaf certificate of the peer, or
// the contract's error: no-client-certificate without one,
// authentication-failure when it was not verified against the trusted CAs
// or may not be used for client authentication.
func clientCertificate(cs *tls.ConnectionState) (*x509.Certificate, *contract.Error) {
	if cs == nil || len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0] == nil {
		return nil, contract.Errorf(contract.LabelNoClientCertificate, "a client certificate is required")
	}
	if len(cs.VerifiedChains) == 0 {
		return nil, contract.Errorf(contract.LabelAuthenticationFailure, "the client certificate is not trusted")
	}
	leaf := cs.PeerCertificates[0]
	if !clientAuthAllowed(leaf) {
		return nil, contract.Errorf(contract.LabelAuthenticationFailure, "the client certificate is not valid for client authentication")
	}
	return leaf, nil
}

// clientAuthAllowed reports whether the certificate's extended key usage
// allows TLS client authentication (no EKU extension means no restriction).
func clientAuthAllowed(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// originDomain returns the canonical origin domain of the request headers.
// Wire-Origin-Domain and Wire-Domain are both accepted. A header given
// more than once, no (or an empty) header, or two headers that do not name
// the same domain are no-origin-domain; the domain is then checked
// (domain-parse-error).
func originDomain(h http.Header) (string, *contract.Error) {
	cur := h.Values(contract.HTTPOriginDomain)
	old := h.Values(contract.HTTPOriginDomainOld)
	if len(cur) > 1 || len(old) > 1 {
		return "", contract.Errorf(contract.LabelNoOriginDomain, "the origin domain header is given more than once")
	}
	var a, b string
	if len(cur) == 1 {
		a = cur[0]
	}
	if len(old) == 1 {
		b = old[0]
	}
	switch {
	case a == "" && b == "":
		return "", contract.Errorf(contract.LabelNoOriginDomain, "header %s is missing", contract.HTTPOriginDomain)
	case a == "":
		a = b
	case b != "" && !sameDomain(a, b):
		return "", contract.Errorf(contract.LabelNoOriginDomain, "headers %s %s and %s %s disagree",
			contract.HTTPOriginDomain, contract.Quote(a), contract.HTTPOriginDomainOld, contract.Quote(b))
	}
	d, err := contract.NormalizeDomain(a)
	if err != nil {
		return "", contract.AsError(err)
	}
	return d, nil
}

// sameDomain reports whether two origin header values name the same
// domain: equal, or equal once normalised.
func sameDomain(a, b string) bool {
	if a == b {
		return true
	}
	na, errA := contract.NormalizeDomain(a)
	nb, errB := contract.NormalizeDomain(b)
	return errA == nil && errB == nil && na == nb
}

// authorize discovers the origin's SRV targets and returns the first DNS
// name of the certificate that is one of them, or (FED_IDENTITY
// srv-or-domain) that is the origin domain itself. A certificate without
// DNS names still gets the discovery (the contract's order: discovery
// errors first), then authentication-failure. The discovery runs in every
// mode: the origin must have a federation SRV record (and, with
// FED_REQUIRE_DNSSEC, a validated one) even when its domain is the SAN.
func (in *Ingress) authorize(ctx context.Context, req *request, leaf *x509.Certificate) (string, *contract.Error) {
	origin := req.origin
	if len(leaf.DNSNames) == 0 {
		// "" never matches a target; the call only runs the discovery.
		if _, err := in.resolver.HasTarget(ctx, origin, ""); err != nil {
			req.cause = err
			return "", lookup.Failure(ctx, lookup.Inbound, origin, err)
		}
		return "", contract.Errorf(contract.LabelAuthenticationFailure, "the client certificate has no DNS name to match the SRV targets of %s", origin)
	}
	for _, san := range leaf.DNSNames {
		ok, err := in.resolver.HasTarget(ctx, origin, san)
		if err != nil {
			req.cause = err
			return "", lookup.Failure(ctx, lookup.Inbound, origin, err)
		}
		if ok {
			return san, nil
		}
	}
	if in.identity == config.IdentitySRVOrDomain {
		for _, san := range leaf.DNSNames {
			if strings.EqualFold(strings.TrimSuffix(san, "."), origin) {
				return san, nil
			}
		}
		return "", contract.Errorf(contract.LabelAuthenticationFailure, "no DNS name of the client certificate is %s or one of its SRV targets", origin)
	}
	return "", contract.Errorf(contract.LabelAuthenticationFailure, "no DNS name of the client certificate is an SRV target of %s", origin)
}

// admit applies the origin's limits to the request and returns the
// function that gives its slot back, or too-many-requests (with
// req.retryAfter).
func (in *Ingress) admit(req *request) (func(), *contract.Error) {
	lim := in.limits.Load()
	if lim == nil {
		return func() {}, nil
	}
	ok, r := lim.acquire(req.origin)
	if ok {
		origin := req.origin
		return func() { lim.release(origin) }, nil
	}
	req.retryAfter = r.retryAfter
	var e *contract.Error
	if r.reason == refusedConcurrency {
		e = contract.Errorf(contract.LabelTooManyRequests, "%s has %d requests in flight, the limit of this backend", req.origin, lim.maxInFlight)
	} else {
		e = contract.Errorf(contract.LabelTooManyRequests, "%s is over the rate of %g requests per second (burst %d) of this backend", req.origin, float64(lim.limit), lim.burst)
	}
	if r.warn {
		in.log.Warn("origin over its limit, requests refused with too-many-requests",
			"origin", req.origin, "reason", e.Message, "refused_since_last_warning", r.refused)
	}
	return nil, e
}

// admitCert applies the limits of the client certificate cert to the
// request: its failed authentications (too many: refused before any
// lookup), then its rate and requests in flight. It returns the limiter
// in which it took a slot for cert (nil when there is none), whose
// release the caller calls once the request is done, or
// too-many-requests (with req.retryAfter).
func (in *Ingress) admitCert(req *request, cert certKey) (*certLimiter, *contract.Error) {
	if fails := in.authFails.Load(); fails != nil {
		if ok, r := fails.ready(cert); !ok {
			req.retryAfter = r.retryAfter
			if r.warn {
				in.log.Warn("client certificate failing authentication too often, its requests refused before any DNS lookup",
					"cert_sha256", hex.EncodeToString(cert[:8]), "origin", req.origin, "refused_since_last_warning", r.refused)
			}
			return nil, contract.Errorf(contract.LabelTooManyRequests, "this client certificate failed authentication more than %d times (then %g per second): its requests are refused until it may try again", fails.burst, float64(fails.limit))
		}
	}
	lim := in.certLimits.Load()
	if lim == nil {
		return nil, nil
	}
	ok, r := lim.acquire(cert)
	if ok {
		return lim, nil
	}
	req.retryAfter = r.retryAfter
	var e *contract.Error
	if r.reason == refusedConcurrency {
		e = contract.Errorf(contract.LabelTooManyRequests, "this client certificate has %d requests in flight, the limit of this backend whatever origins it proves", lim.maxInFlight)
	} else {
		e = contract.Errorf(contract.LabelTooManyRequests, "this client certificate is over the rate of %g requests per second (burst %d) of this backend, whatever origins it proves", float64(lim.limit), lim.burst)
	}
	if r.warn {
		in.log.Warn("client certificate over its limit, requests refused with too-many-requests",
			"cert_sha256", hex.EncodeToString(cert[:8]), "origin", req.origin, "reason", e.Message, "refused_since_last_warning", r.refused)
	}
	return nil, e
}

// readBody reads the request body, at most MaxBodyBytes (w is told when
// the limit is hit, so that the server closes the connection).
func (in *Ingress) readBody(w http.ResponseWriter, r *http.Request, req *request) ([]byte, *contract.Error) {
	return in.readLimited(w, r, req, in.cfg.MaxBodyBytes)
}

// readLimited reads the request body, at most limit bytes.
func (in *Ingress) readLimited(w http.ResponseWriter, r *http.Request, req *request, limit int64) ([]byte, *contract.Error) {
	if r.ContentLength > limit {
		return nil, contract.Errorf(contract.LabelPayloadTooLarge, "body of %d bytes is over the limit of %d", r.ContentLength, limit)
	}
	if r.Body == nil || r.Body == http.NoBody {
		return []byte{}, nil
	}
	body, err := iox.ReadAllSized(http.MaxBytesReader(w, r.Body, limit), r.ContentLength)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, contract.Errorf(contract.LabelPayloadTooLarge, "body is over the limit of %d bytes", limit)
		}
		req.cause = err
		return nil, contract.Errorf(contract.LabelInvalidRequest, "reading the body failed")
	}
	return body, nil
}

// publish sends the request to the local component and returns its answer.
func (in *Ingress) publish(ctx context.Context, req *request, traceParent string, body []byte) (bus.Event, *contract.Error) {
	subject, err := in.subjects.In(req.component, req.rpc, req.origin)
	if err != nil { // cannot happen: every token was checked
		return bus.Event{}, contract.AsError(err)
	}
	remaining := time.Until(req.deadline)
	if remaining <= 0 || ctx.Err() != nil {
		return bus.Event{}, contract.Errorf(contract.LabelTimeout, "the request deadline passed before it was published")
	}
	req.published = true
	var span tracing.Span
	if tracing.On() { // off: no span name or attributes made
		ctx, span = tracing.Start(ctx, "fedbus.publish "+req.component+"."+req.rpc, trace.SpanKindClient, traceParent,
			tracing.AttrComponent.String(req.component), tracing.AttrRPC.String(req.rpc), tracing.AttrDomain.String(req.origin))
	}
	ev := bus.Event{
		ID:              req.id,
		Source:          contract.OriginSource(req.origin, req.component),
		Type:            contract.TypeRequest,
		DataContentType: contract.ContentTypeJSON,
		TraceParent:     tracing.TraceParent(ctx, traceParent),
		OriginDomain:    req.origin,
		TimeoutMs:       max(remaining.Milliseconds(), 1),
		Data:            body,
	}
	reply, xerr := in.exchange(ctx, ev.Message(subject))
	if xerr != nil {
		e := contract.AsError(xerr)
		span.End(e, e.Label)
		return bus.Event{}, e
	}
	span.End(nil, "")
	return reply, nil
}
