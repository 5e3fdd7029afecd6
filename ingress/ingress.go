// Package ingress is the inbound side of fedbus: an HTTPS server (HTTP/2
// and HTTP/1.1 over TLS with client certificates: TLS 1.3 by default,
// 1.2 when FED_TLS_MIN_VERSION allows it) that receives
// federated requests from remote backends, authenticates them as the
// contract's section 3 prescribes, and republishes each one to the local
// component with NATS request-reply on fed.in.<component>.<rpc>.<origin>.
//
// The checks run in the contract's order and the first failure answers
// the request with the contract's error body (section 4):
//
//  1. the client certificate chains to FED_TLS_CA (no-client-certificate,
//     authentication-failure; an untrusted certificate fails the TLS
//     handshake already);
//  2. POST, no query string, path /federation/<component>/<rpc>
//     (invalid-endpoint), component in FED_COMPONENTS (unknown-component),
//     valid rpc (invalid-endpoint);
//  3. the origin header (Wire-Origin-Domain, or the seed document's
//     Wire-Domain; both present must agree) is present (no-origin-domain)
//     and a valid domain (domain-parse-error);
//  4. the federation strategy allows the origin (federation-denied);
//  5. discovery of the origin succeeds (invalid-domain, discovery-failure,
//     federation-timeout);
//  6. one DNS SAN of the client certificate is one of the origin's SRV
//     targets (authentication-failure): a certificate of backend C cannot
//     speak for domain A; with FED_IDENTITY=srv-or-domain a DNS SAN equal
//     to the origin domain is accepted too, and with FED_REQUIRE_DNSSEC an
//     SRV answer without the resolver's AD flag is authentication-failure;
//  7. the body is at most FED_MAX_BODY_BYTES (payload-too-large).
//
// Between 4 and 5, the client certificate's limits apply, before any DNS
// lookup: its failed authentications (FED_INGRESS_AUTH_FAILURE_RATE and
// _BURST: a certificate whose claims keep failing steps 5 and 6 gets
// too-many-requests without a lookup), then its rate and its requests in
// flight (FED_INGRESS_CERT_RATE, _BURST, _CONCURRENCY), whatever origins
// it claims: under allow-all one certificate can prove many origins.
// Nobody else can spend them (that takes the certificate's key).
//
// Between 6 and 7, once the origin is proven, two more checks run. First
// the origin's limits (FED_INGRESS_ORIGIN_RATE, FED_INGRESS_ORIGIN_BURST,
// FED_INGRESS_ORIGIN_CONCURRENCY): too-many-requests (429) with
// Retry-After. They are per origin, so one backend cannot use up another's
// budget, and they are not applied before the proof, so nobody can spend
// a budget in another origin's name. Then the origin's per-RPC rules
// (policy.Authorize: the dynamic configuration may restrict the
// components and RPCs a remote calls; federation-denied, after the proof
// so that the rules are revealed to nobody else). The server itself
// bounds what a client gets before any check: the TLS handshake and the
// headers within FED_INGRESS_READ_HEADER_TIMEOUT, headers of at most 64
// KiB, at most FED_INGRESS_MAX_STREAMS HTTP/2 streams per connection,
// HTTP/2 frames of at most 64 KiB, idle connections closed after
// FED_INGRESS_IDLE_TIMEOUT. FED_MAX_BODY_BYTES is lowered at start to
// what one NATS message carries.
//
// A refused request never produces a NATS message. A peer refused for
// its certificate has its connection closed gracefully (linger.go), so
// that it reads the whole refusal even while it is still sending.
//
// A request carrying Fedbus-Notification-Id is a notification (section 6):
// after the same checks, it is stored with JetStream on
// fed.inbox.<component>.<rpc>.<origin> and answered 200 once stored (also
// when it was stored before). POST /fedbus/notifications carries a batch of
// them from a fedbus sender (notify.go). Every authenticated request also
// tells the federators that its origin contacted us (fed.contact.<origin>),
// so that notifications waiting for it are retried at once.
package ingress

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/metrics"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/tlsconf"
)

// Deps are the shared resources an Ingress uses. The Ingress does not own
// them: the caller closes them after Shutdown.
type Deps struct {
	// NATS is the connection requests are published on.
	NATS *nats.Conn
	// Objects reads the answers that components give as objects of the
	// object store (contract section 8; setup.Shared has it). Without it
	// such answers fail with server-error.
	Objects *bus.Objects
	// Resolver discovers the SRV targets of origin domains.
	Resolver *discovery.Resolver
	// Policy is the federation strategy applied to origin domains.
	Policy *policy.Policy
	// Certs holds the server certificate and the CAs trusted for clients.
	Certs *tlsconf.Store
	// Logger receives the ingress's logs (required).
	Logger *slog.Logger
	// Metrics, when set, records the requests (nil: none).
	Metrics *metrics.Metrics
	// JetStream, when set, lets the ingress take notifications (section
	// 6): it creates the inbound stream when missing. Without it a
	// notification is answered component-unavailable (503, its sender
	// retries).
	JetStream jetstream.JetStream
}

// targetResolver is what the ingress needs of discovery; tests substitute
// a stub.
type targetResolver interface {
	HasTarget(ctx context.Context, domain, sanName string) (bool, error)
}

// exchangeFunc sends a request message and returns the fedbus.response or
// a contract error (bus.ExchangeEvent on the NATS connection).
type exchangeFunc func(ctx context.Context, msg *nats.Msg) (bus.Event, error)

// Ingress is the inbound federation endpoint. It is an http.Handler and
// runs its own TLS server (Start or Serve, then Shutdown).
type Ingress struct {
	cfg        Config
	subjects   contract.Subjects
	components map[string]struct{}
	resolver   targetResolver
	policy     *policy.Policy
	certs      *tlsconf.Store
	log        *slog.Logger
	exchange   exchangeFunc
	requester  *bus.Requester // nil when tests substitute exchange
	objects    *bus.Objects   // nil: no object store
	srv        *http.Server
	identity   string                        // config.IdentitySRV or config.IdentitySRVOrDomain
	limits     atomic.Pointer[originLimiter] // nil: no per-origin limit
	certLimits atomic.Pointer[certLimiter]   // nil: no per-certificate limit
	authFails  atomic.Pointer[certLimiter]   // failed authentications per certificate; nil: no limit
	fresh      sync.Map                      // net.Conn -> *time.Timer: connections without a request yet
	nc         *nats.Conn                    // contact signals; nil in tests that substitute exchange
	inbox      inbox                         // notifications
	contacts   contacts                      // origins last signalled to the federators

	mu   sync.Mutex
	addr net.Addr

	wg     sync.WaitGroup // the serving goroutine of Start
	failed chan error     // Start's serving failure

	// Lingering closes of refused peers' connections (linger.go).
	lingerMu      sync.Mutex
	lingerConns   map[net.Conn]struct{}
	lingerStopped bool
	lingerWG      sync.WaitGroup

	metrics *metrics.Metrics
	stats   bus.Counter
}

// New returns an Ingress for cfg and deps. cfg starts from NewConfig; New
// refuses invalid serving settings (the binary validates the whole
// configuration first).
func New(cfg Config, deps Deps) (*Ingress, error) {
	if deps.NATS == nil {
		return nil, errors.New("create ingress: no NATS connection")
	}
	if deps.Resolver == nil {
		return nil, errors.New("create ingress: no discovery resolver")
	}
	if deps.Logger == nil {
		return nil, errors.New("create ingress: no logger")
	}
	// A body must fit in one NATS message with its headers: a larger
	// FED_MAX_BODY_BYTES would let bodies in that no component can be
	// sent (contract section 8 is for answers, not requests).
	if limit, clamped := bus.ClampBody(deps.NATS, cfg.MaxBodyBytes); clamped {
		deps.Logger.Info("FED_MAX_BODY_BYTES lowered to what the NATS server carries",
			"component", "ingress", "configured", cfg.MaxBodyBytes, "max_body_bytes", limit,
			"nats_max_payload", deps.NATS.MaxPayload(), "header_room", bus.HeaderRoom)
		cfg.MaxBodyBytes = limit
	}
	// Requests go out through a Requester: published in batches (one
	// flush for the requests of many streams), replies on one inbox.
	req, err := bus.NewRequester(deps.NATS, nil, deps.Logger.With("component", "ingress"))
	if err != nil {
		return nil, fmt.Errorf("create ingress: %w", err)
	}
	exchange := func(ctx context.Context, msg *nats.Msg) (bus.Event, error) {
		return bus.ExchangeEvent(ctx, req, msg)
	}
	in, err := newIngress(cfg, deps, deps.Resolver, exchange)
	if err != nil {
		_ = req.Close()
		return nil, err
	}
	in.requester = req
	deps.Metrics.AddPending("ingress replies", req.PendingBytes)
	return in, nil
}

// newIngress is New with the resolver and the NATS exchange given
// separately, so that tests can substitute them.
func newIngress(cfg Config, deps Deps, resolver targetResolver, exchange exchangeFunc) (*Ingress, error) {
	if deps.Policy == nil {
		return nil, errors.New("create ingress: no federation policy")
	}
	if deps.Certs == nil {
		return nil, errors.New("create ingress: no certificate store")
	}
	if deps.Logger == nil {
		return nil, errors.New("create ingress: no logger")
	}
	if err := errors.Join(cfg.ValidateServing(), cfg.validateOwn()); err != nil {
		return nil, fmt.Errorf("create ingress: %w", err)
	}
	subjects, err := contract.NewSubjects(cfg.SubjectPrefix)
	if err != nil {
		return nil, fmt.Errorf("create ingress: %w", err)
	}
	components := make(map[string]struct{}, len(cfg.Components))
	for _, c := range cfg.Components {
		components[c] = struct{}{}
	}
	logger := deps.Logger.With("component", "ingress")
	in := &Ingress{
		cfg:         cfg,
		subjects:    subjects,
		components:  components,
		resolver:    resolver,
		policy:      deps.Policy,
		certs:       deps.Certs,
		log:         logger,
		exchange:    exchange,
		objects:     deps.Objects,
		identity:    cfg.Identity,
		failed:      make(chan error, 1),
		lingerConns: make(map[net.Conn]struct{}),
		metrics:     deps.Metrics,
		nc:          deps.NATS,
	}
	in.inbox.js = deps.JetStream
	in.limits.Store(newOriginLimiter(cfg.OriginRate, cfg.OriginBurst, cfg.OriginConcurrency, nil))
	in.certLimits.Store(newCertLimiter(cfg.CertRate, cfg.CertBurst, cfg.CertConcurrency, nil))
	in.authFails.Store(newCertLimiter(cfg.AuthFailureRate, cfg.AuthFailureBurst, 0, nil))
	in.srv = &http.Server{
		Addr:      cfg.Addr,
		Handler:   in,
		TLSConfig: deps.Certs.ServerConfig(),
		// Bounds the TLS handshake as well (net/http uses the smallest
		// of the read and write timeouts for it).
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		// The whole request, body included, must arrive within the
		// request deadline (HTTP/2: per stream).
		ReadTimeout:    cfg.ReadHeaderTimeout + cfg.RequestTimeout,
		WriteTimeout:   cfg.ReadHeaderTimeout + cfg.RequestTimeout + writeSlack,
		IdleTimeout:    cfg.IdleTimeout,
		MaxHeaderBytes: MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: cfg.MaxStreams,
			MaxReadFrameSize:     MaxReadFrameSize,
			WriteByteTimeout:     writeByteTimeout,
		},
		ErrorLog:    serverLog(logger, deps.Metrics),
		ConnState:   in.connState,
		ConnContext: withConn,
	}
	in.srv.Protocols = new(http.Protocols)
	in.srv.Protocols.SetHTTP1(true)
	in.srv.Protocols.SetHTTP2(true)
	return in, nil
}

// defaultBurst gives a rate limit without a burst one second's worth of
// requests (at least 1).
func defaultBurst(cfg *Config) {
	if cfg.OriginRate > 0 && cfg.OriginBurst == 0 {
		cfg.OriginBurst = max(1, int(math.Ceil(cfg.OriginRate)))
	}
}

// connKey is the context key of a request's connection.
type connKey struct{}

// withConn is the server's ConnContext: it records the connection in the
// context of its requests (HTTP/1.1 and HTTP/2).
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// connState is the server's ConnState hook. It gives every new connection
// twice the read-header timeout (the TLS handshake, then the headers) to
// deliver its first complete request, else closes it. HTTP/1.1 has this
// bound from the server's own timeouts; HTTP/2 has not: a connection that
// never completes a stream would otherwise stay until the idle timeout.
func (in *Ingress) connState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		t := time.AfterFunc(2*in.cfg.ReadHeaderTimeout, func() {
			if _, ok := in.fresh.LoadAndDelete(c); ok {
				in.log.Debug("connection closed: no request in time", "remote", c.RemoteAddr().String())
				closeNow(c)
			}
		})
		in.fresh.Store(c, t)
	case http.StateClosed, http.StateHijacked:
		in.served(c)
	}
}

// served marks the connection c as having delivered a request.
func (in *Ingress) served(c net.Conn) {
	if t, ok := in.fresh.LoadAndDelete(c); ok {
		t.(*time.Timer).Stop()
	}
}

// servedRequest marks the connection of r as having delivered a request.
func (in *Ingress) servedRequest(r *http.Request) {
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
		in.served(c)
	}
}

// closeNow closes c without the TLS close_notify (which could wait for
// a peer that does not read).
func closeNow(c net.Conn) {
	if tc, ok := c.(*tls.Conn); ok {
		_ = tc.NetConn().Close()
		return
	}
	_ = c.Close()
}

// SetOriginLimits replaces the per-origin limits (see Config.OriginRate,
// OriginBurst and OriginConcurrency; 0: no limit, and a rate without a
// burst gets one second's worth) with fresh budgets, for tests and tuning;
// requests in flight finish under the old ones.
func (in *Ingress) SetOriginLimits(rps float64, burst, concurrency int) error {
	c := Config{OriginRate: rps, OriginBurst: burst, OriginConcurrency: concurrency}
	defaultBurst(&c)
	if err := checkProtection(&c); err != nil {
		return fmt.Errorf("set origin limits: %w", err)
	}
	in.limits.Store(newOriginLimiter(c.OriginRate, c.OriginBurst, c.OriginConcurrency, nil))
	return nil
}

// Serve serves HTTPS on ln (TLS with the certificate store's server
// configuration, 1.3 by default; HTTP/2 and HTTP/1.1 by ALPN) until Shutdown, after which
// it returns http.ErrServerClosed.
func (in *Ingress) Serve(ln net.Listener) error {
	in.mu.Lock()
	in.addr = ln.Addr()
	in.mu.Unlock()
	in.log.Info("serving", "addr", ln.Addr().String())
	if in.inbox.js != nil {
		// The inbound notification stream, when missing; a failure
		// here is retried by the first notification.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = in.inboxReady(ctx)
		cancel()
	}
	// The certificate comes from TLSConfig.GetConfigForClient, hence no
	// files. ServeTLS configures HTTP/2 on the TLS listener. Connections
	// of refused peers close gracefully (lingerListener).
	err := in.srv.ServeTLS(&lingerListener{Listener: ln, in: in}, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return http.ErrServerClosed
	}
	return fmt.Errorf("serve ingress: %w", err)
}

// Start listens on the configured address (FED_INGRESS_ADDR) and serves
// in the background until Shutdown; a serving failure is delivered on
// Failed. An address in use fails Start itself.
func (in *Ingress) Start(context.Context) error {
	ln, err := net.Listen("tcp", in.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", in.cfg.Addr, err)
	}
	in.wg.Add(1)
	go func() {
		defer in.wg.Done()
		if err := in.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			in.failed <- err
		}
	}()
	return nil
}

// Endpoints is the ingress as NATS service discovery shows it
// (setup.Announce): the requests it answered, the errors among them and
// the last one, and the time spent.
func (in *Ingress) Endpoints() []bus.ServiceEndpoint {
	return []bus.ServiceEndpoint{{
		Name: "inbound", Subject: in.subjects.InAll(),
		Metadata: map[string]string{"https": in.cfg.Addr, "path": contract.PathPrefix + "<component>/<rpc>"},
		Stats:    in.stats.Stats,
	}}
}

// Failed delivers the error that ended serving (after Start), if any.
func (in *Ingress) Failed() <-chan error { return in.failed }

// Addr returns the address the ingress listens on, nil before Serve.
func (in *Ingress) Addr() net.Addr {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.addr
}

// Shutdown stops the server gracefully: it closes the listener, lets the
// requests in flight (HTTP/1.1 and HTTP/2 streams) finish, and returns
// when they have, or with ctx's error when ctx ends first; then the
// remaining connections are closed.
func (in *Ingress) Shutdown(ctx context.Context) error {
	err := in.srv.Shutdown(ctx)
	if err != nil {
		_ = in.srv.Close()
		err = fmt.Errorf("shut down ingress: %w", err)
	}
	in.wg.Wait()
	in.stopLingering()
	if in.requester != nil {
		err = errors.Join(err, in.requester.Close())
	}
	return err
}

// known reports whether component is one of FED_COMPONENTS.
func (in *Ingress) known(component string) bool {
	_, ok := in.components[component]
	return ok
}

// deadlineOf returns the deadline of a request started at start: the
// smaller of the caller's Request-Timeout-Ms (when it is a positive
// integer) and the configured request timeout.
func (in *Ingress) deadlineOf(start time.Time, header string) time.Time {
	timeout := in.cfg.RequestTimeout
	if ms, ok := contract.ParseTimeoutMs(header); ok && ms < timeout.Milliseconds() {
		timeout = time.Duration(ms) * time.Millisecond
	}
	return start.Add(timeout)
}
