// Package ingress is the inbound side of fedbus: an HTTPS server (HTTP/2
// and HTTP/1.1 over TLS 1.3 with client certificates) that receives
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
//     speak for domain A;
//  7. the body is at most FED_MAX_BODY_BYTES (payload-too-large).
//
// A refused request never produces a NATS message.
package ingress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/federator/certs"
	"github.com/fedbus/fedbus/federator/discovery"
	"github.com/fedbus/fedbus/federator/policy"
)

// Deps are the shared resources an Ingress uses. The Ingress does not own
// them: the caller closes them after Shutdown.
type Deps struct {
	// NATS is the connection requests are published on.
	NATS *nats.Conn
	// Resolver discovers the SRV targets of origin domains.
	Resolver *discovery.Resolver
	// Policy is the federation strategy applied to origin domains.
	Policy *policy.Policy
	// Certs holds the server certificate and the CAs trusted for clients.
	Certs *certs.Store
	// Logger receives the ingress's logs; nil means slog.Default().
	Logger *slog.Logger
}

// targetResolver is what the ingress needs of discovery; tests substitute
// a stub.
type targetResolver interface {
	HasTarget(ctx context.Context, domain, sanName string) (bool, error)
}

// exchangeFunc sends a request message and returns the reply body or a
// contract error (bus.Exchange on the NATS connection).
type exchangeFunc func(ctx context.Context, msg *nats.Msg) ([]byte, error)

// Ingress is the inbound federation endpoint. It is an http.Handler and
// runs its own TLS server (Serve, ListenAndServe, Shutdown).
type Ingress struct {
	cfg        Config
	subjects   bus.Subjects
	components map[string]struct{}
	resolver   targetResolver
	policy     *policy.Policy
	certs      *certs.Store
	log        *slog.Logger
	exchange   exchangeFunc
	srv        *http.Server

	mu   sync.Mutex
	addr net.Addr
}

// New returns an Ingress for cfg and deps. Zero fields of cfg get the
// contract's defaults (Addr, MaxBodyBytes, RequestTimeout, SubjectPrefix,
// Components); the binary calls cfg.Validate before New for a complete
// check of the environment.
func New(cfg Config, deps Deps) (*Ingress, error) {
	if deps.NATS == nil {
		return nil, errors.New("create ingress: no NATS connection")
	}
	if deps.Resolver == nil {
		return nil, errors.New("create ingress: no discovery resolver")
	}
	nc := deps.NATS
	exchange := func(ctx context.Context, msg *nats.Msg) ([]byte, error) {
		return bus.Exchange(ctx, nc, msg)
	}
	return newIngress(cfg, deps, deps.Resolver, exchange)
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
	if err := applyDefaults(&cfg); err != nil {
		return nil, fmt.Errorf("create ingress: %w", err)
	}
	subjects, err := bus.NewSubjects(cfg.SubjectPrefix)
	if err != nil {
		return nil, fmt.Errorf("create ingress: %w", err)
	}
	components := make(map[string]struct{}, len(cfg.Components))
	for _, c := range cfg.Components {
		if !bus.ValidComponent(c) {
			return nil, fmt.Errorf("create ingress: component %q is not [a-z0-9-]{1,63}", c)
		}
		components[c] = struct{}{}
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "ingress")
	in := &Ingress{
		cfg:        cfg,
		subjects:   subjects,
		components: components,
		resolver:   resolver,
		policy:     deps.Policy,
		certs:      deps.Certs,
		log:        logger,
		exchange:   exchange,
	}
	in.srv = &http.Server{
		Addr:              cfg.Addr,
		Handler:           in,
		TLSConfig:         deps.Certs.ServerConfig(),
		ReadHeaderTimeout: ReadHeaderTimeout,
		// The whole request, body included, must arrive within the
		// request deadline.
		ReadTimeout:    ReadHeaderTimeout + cfg.RequestTimeout,
		WriteTimeout:   ReadHeaderTimeout + cfg.RequestTimeout + writeSlack,
		IdleTimeout:    IdleTimeout,
		MaxHeaderBytes: MaxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	in.srv.Protocols = new(http.Protocols)
	in.srv.Protocols.SetHTTP1(true)
	in.srv.Protocols.SetHTTP2(true)
	return in, nil
}

// applyDefaults fills the zero fields of cfg and refuses negative ones.
func applyDefaults(cfg *Config) error {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = DefaultSubjectPrefix
	}
	if len(cfg.Components) == 0 {
		cfg.Components = DefaultComponents()
	}
	switch {
	case cfg.MaxBodyBytes < 0:
		return fmt.Errorf("max body bytes %d is negative", cfg.MaxBodyBytes)
	case cfg.MaxBodyBytes == 0:
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	switch {
	case cfg.RequestTimeout < 0:
		return fmt.Errorf("request timeout %v is negative", cfg.RequestTimeout)
	case cfg.RequestTimeout == 0:
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	return nil
}

// Serve serves HTTPS on ln (TLS 1.3 with the certificate store's server
// configuration; HTTP/2 and HTTP/1.1 by ALPN) until Shutdown, after which
// it returns http.ErrServerClosed.
func (in *Ingress) Serve(ln net.Listener) error {
	in.mu.Lock()
	in.addr = ln.Addr()
	in.mu.Unlock()
	in.log.Info("serving", "addr", ln.Addr().String())
	// The certificate comes from TLSConfig.GetConfigForClient, hence no
	// files. ServeTLS configures HTTP/2 on the TLS listener.
	err := in.srv.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return http.ErrServerClosed
	}
	return fmt.Errorf("serve ingress: %w", err)
}

// ListenAndServe listens on the configured address (FED_INGRESS_ADDR) and
// serves as Serve does.
func (in *Ingress) ListenAndServe() error {
	ln, err := net.Listen("tcp", in.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", in.cfg.Addr, err)
	}
	return in.Serve(ln)
}

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
	if err := in.srv.Shutdown(ctx); err != nil {
		_ = in.srv.Close()
		return fmt.Errorf("shut down ingress: %w", err)
	}
	return nil
}

// deadlineOf returns the deadline of a request started at start: the
// smaller of the caller's Request-Timeout-Ms (when it is a positive
// integer) and the configured request timeout.
func (in *Ingress) deadlineOf(start time.Time, header string) time.Time {
	timeout := in.cfg.RequestTimeout
	if ms, ok := parseTimeoutMs(header); ok && ms < timeout.Milliseconds() {
		timeout = time.Duration(ms) * time.Millisecond
	}
	return start.Add(timeout)
}
