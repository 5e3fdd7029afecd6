package fedtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sethvargo/go-envconfig"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/federator"
	"github.com/fedbus/fedbus/ingress"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/setup"
	"github.com/fedbus/fedbus/test/testbed"
)

// BackendOptions describe one in-process backend.
type BackendOptions struct {
	Domain    string // e.g. a.example.com
	InfraHost string // SRV target and certificate SAN, e.g. fed.a-infra.example.net
	CA        *testbed.CA
	DNS       *testbed.DNS
	Dir       string // where certificate files are written
	Strategy  string // default allow-all
	AllowList []string
	// Components defaults to brig, galley, cargohold.
	Components     []string
	RequestTimeout time.Duration // default 10s
	MaxBodyBytes   int64         // default 1 MiB
	Federators     int           // workers, default 1
	Logger         *slog.Logger
	FederatorHook  func(requestID, step string)
	// Env overrides or adds environment variables of the backend's
	// federators and ingress (e.g. FED_INGRESS_ORIGIN_RATE).
	Env map[string]string
	// MaxPerRemote overrides FED_MAX_IN_FLIGHT_PER_REMOTE of the federators.
	MaxPerRemote int
	// KVBucket enables the dynamic federation config (needs JetStream,
	// which StartBackend enables when it is set).
	KVBucket string
	// TLSReloadInterval is how often the certificate files are checked
	// (default 2s).
	TLSReloadInterval time.Duration
	// TrustPEM is the CA bundle trusted for remote backends (default: CA's
	// certificate).
	TrustPEM []byte
	// CertNames overrides the certificate's DNS SANs (default InfraHost).
	CertNames []string
	// Cluster, when set, is the NATS cluster the backend runs on instead
	// of an embedded server of its own (the caller starts and stops it).
	// FED_NATS_URL lists every server; each process prefers one server
	// (the components' connection server 0, federator i server i+1, the
	// ingress the next one, modulo the cluster's size) and fails over to
	// the others in order (FED_NATS_IN_ORDER). JetStream assets get
	// FED_JETSTREAM_REPLICAS = min(3, size) unless Env sets it.
	Cluster *testbed.Cluster
	// NoFederators starts no federator in this process (a test runs them
	// as processes of their own, with Backend.Env).
	NoFederators bool
	// WrapIngress, when set, wraps the ingress's handler (e.g. to lose
	// answers); the backend then serves it with an HTTPS server of its own
	// (the ingress's connection limits do not apply).
	WrapIngress func(http.Handler) http.Handler
}

// Backend is a whole backend in one process: an embedded NATS server, a
// federator (or several) and an ingress on 127.0.0.1, registered in DNS.
type Backend struct {
	Domain      string
	NATSServer  *server.Server
	NATSURL     string
	NATS        *nats.Conn          // a connection for local components
	JetStream   jetstream.JetStream // on NATS, for local components' notifications
	Subjects    contract.Subjects
	Federators  []*federator.Federator
	Ingress     *ingress.Ingress
	IngressAddr string
	Files       testbed.Files
	Common      config.Common
	// FederatorShared are the shared services of each federator (one
	// process each: their Metrics), IngressShared those of the ingress.
	FederatorShared []*setup.Shared
	IngressShared   *setup.Shared
	// Cluster is BackendOptions.Cluster (nil on an embedded server).
	Cluster *testbed.Cluster
	// Env is the environment of the backend's services (FED_*), for a
	// test that runs a service as a process of its own.
	Env map[string]string

	ctx     context.Context // of the federators' requests
	env     map[string]string
	log     *slog.Logger
	hook    func(requestID, step string)
	maxPer  int
	fedNATS []*nats.Conn    // each federator's connection
	fedSh   []*setup.Shared // each federator's shared services (nil once stopped)
	shared  []*setup.Shared // the ingress's
	cancel  context.CancelFunc
	serveCh chan error
	icfg    ingress.Config
	ideps   ingress.Deps
	// NATS service discovery answers of the federators and the ingress.
	announced  []*bus.Announcement
	ingressAnn *bus.Announcement
	wrap       func(http.Handler) http.Handler
	wrapped    *http.Server // serves the wrapped ingress; nil without WrapIngress
}

// StartBackend starts a backend. Close stops it.
func StartBackend(opts BackendOptions) (_ *Backend, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Federators == 0 {
		opts.Federators = 1
	}
	// JetStream on file storage, as in production: the dynamic config,
	// notifications and large bodies live there.
	storeDir, err := os.MkdirTemp(opts.Dir, "jetstream-")
	if err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Backend{Domain: opts.Domain, Cluster: opts.Cluster, ctx: ctx, log: opts.Logger, hook: opts.FederatorHook,
		maxPer: opts.MaxPerRemote, cancel: cancel, serveCh: make(chan error, 1), wrap: opts.WrapIngress}
	if opts.Cluster == nil {
		ns, err := testbed.StartNATS(storeDir)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
		}
		b.NATSServer, b.NATSURL = ns, ns.ClientURL()
	} else {
		b.NATSURL = strings.Join(opts.Cluster.URLs(0), ",")
	}
	defer func() {
		if err != nil {
			cctx, c := context.WithTimeout(context.Background(), 5*time.Second)
			defer c()
			_ = b.Close(cctx)
		}
	}()
	env, files, err := backendEnv(&opts, b.NATSURL)
	if err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	b.Files, b.env, b.Env = files, env, env
	b.Common = config.DefaultCommon()
	if err := config.Load(ctx, &b.Common, envconfig.MapLookuper(env)); err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	if err := b.Common.Validate(); err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	b.Common.Normalize()
	if b.Subjects, err = contract.NewSubjects(contract.DefaultPrefix); err != nil {
		return nil, err
	}
	if b.NATS, err = bus.Connect(b.urls(0), "components "+opts.Domain, opts.Logger, nats.DontRandomize()); err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	if b.JetStream, err = jetstream.New(b.NATS); err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	if opts.KVBucket != "" {
		if _, err := policy.OpenStore(ctx, b.JetStream, opts.KVBucket, b.Common.JetStreamReplicas); err != nil {
			return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
		}
	}
	for i := range opts.Federators {
		if opts.NoFederators {
			break
		}
		if _, err := b.AddFederator(b.urls(i + 1)); err != nil {
			return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
		}
	}
	ingressCommon := b.Common
	ingressCommon.NATSURL = b.urls(opts.Federators + 1)
	sh, err := setup.Open(ingressCommon, "ingress", opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	b.shared = append(b.shared, sh)
	b.IngressShared = sh
	env["FED_INGRESS_ADDR"] = "127.0.0.1:0"
	icfg := ingress.NewConfig()
	if err := config.Load(ctx, &icfg, envconfig.MapLookuper(env)); err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	icfg.Normalize()
	b.icfg = icfg
	b.ideps = ingress.Deps{NATS: sh.NATS, Objects: sh.Objects, JetStream: sh.JetStream, Resolver: sh.Resolver, Policy: sh.Policy, Certs: sh.Certs, Logger: opts.Logger, Metrics: sh.Metrics}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	b.IngressAddr = ln.Addr().String()
	if err := b.serveIngress(ln); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	opts.DNS.SetSRV(opts.Domain, 60, testbed.SRVRecord{Target: opts.InfraHost, Port: uint16(port), Priority: 10, Weight: 5})
	if err := opts.DNS.SetA(opts.InfraHost, 60, "127.0.0.1"); err != nil {
		return nil, fmt.Errorf("start backend %s: %w", opts.Domain, err)
	}
	return b, nil
}

// backendEnv fills the defaults of opts, writes the backend's certificate
// files and returns the environment of its federators and ingress.
func backendEnv(opts *BackendOptions, natsURL string) (map[string]string, testbed.Files, error) {
	if opts.Strategy == "" {
		opts.Strategy = "allow-all"
	}
	if len(opts.Components) == 0 {
		opts.Components = []string{"brig", "galley", "cargohold"}
	}
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	if opts.MaxBodyBytes == 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.TLSReloadInterval == 0 {
		opts.TLSReloadInterval = 2 * time.Second
	}
	names := opts.CertNames
	if names == nil {
		names = []string{opts.InfraHost}
	}
	leaf, err := opts.CA.Issue(testbed.LeafOptions{}, names...)
	if err != nil {
		return nil, testbed.Files{}, err
	}
	trust := opts.TrustPEM
	if trust == nil {
		trust = opts.CA.CertPEM
	}
	files, err := leaf.WriteFiles(opts.Dir, opts.Domain, trust)
	if err != nil {
		return nil, testbed.Files{}, err
	}
	env := map[string]string{
		"FED_DOMAIN": opts.Domain, "FED_NATS_URL": natsURL, "FED_DNS_SERVER": opts.DNS.Addr(),
		"FED_STRATEGY": opts.Strategy, "FED_ALLOW_LIST": strings.Join(opts.AllowList, ","),
		"FED_TLS_CERT": files.Cert, "FED_TLS_KEY": files.Key, "FED_TLS_CA": files.CA,
		"FED_COMPONENTS": strings.Join(opts.Components, ","), "FED_REQUEST_TIMEOUT": opts.RequestTimeout.String(),
		"FED_ALLOW_PRIVATE_TARGETS": "true", "FED_SHUTDOWN_TIMEOUT": "10s", "FED_KV_BUCKET": opts.KVBucket,
		"FED_TLS_RELOAD_INTERVAL": opts.TLSReloadInterval.String(), "FED_MAX_BODY_BYTES": fmt.Sprint(opts.MaxBodyBytes),
		// Process backends run several binaries on one host: each its own
		// ops port (in-process backends serve no ops endpoint).
		"FED_OPS_ADDR":      "127.0.0.1:0",
		"FED_NATS_IN_ORDER": "true",
	}
	if opts.Cluster != nil {
		env["FED_JETSTREAM_REPLICAS"] = strconv.Itoa(min(3, opts.Cluster.Size()))
	}
	for k, v := range opts.Env {
		env[k] = v
	}
	return env, files, nil
}

// urls is FED_NATS_URL of the process placed on server i of the cluster
// (every server, server i mod size first; the one server without a
// cluster).
func (b *Backend) urls(i int) string {
	if b.Cluster == nil {
		return b.NATSURL
	}
	return strings.Join(b.Cluster.URLs(i%b.Cluster.Size()), ",")
}

// AddFederator starts one more federator worker whose NATS connection uses
// urls (comma-separated, tried in order: the first is its server), e.g.
// the servers of another region's cluster. It returns the worker's index
// in Federators and FederatorNATS.
func (b *Backend) AddFederator(urls string) (int, error) {
	i := len(b.Federators)
	c := b.Common
	c.NATSURL = urls
	sh, err := setup.Open(c, "federator "+strconv.Itoa(i), b.log)
	if err != nil {
		return 0, err
	}
	fcfg := federator.NewConfig()
	if err := config.Load(b.ctx, &fcfg, envconfig.MapLookuper(b.env)); err != nil {
		_ = sh.Close(b.ctx)
		return 0, err
	}
	fcfg.Normalize()
	if b.maxPer != 0 {
		fcfg.MaxPerRemote = b.maxPer
	}
	f, err := federator.New(fcfg, federator.Deps{NATS: sh.NATS, Objects: sh.Objects, JetStream: sh.JetStream, Resolver: sh.Resolver, Policy: sh.Policy, Certs: sh.Certs, Logger: b.log, Hook: b.hook, Metrics: sh.Metrics})
	if err == nil {
		err = f.Start(b.ctx)
	}
	var ann *bus.Announcement
	if err == nil {
		if ann, err = setup.Announce(sh.NATS, "federator", &b.Common, f.Endpoints()); err != nil {
			_ = f.Shutdown(b.ctx)
		}
	}
	if err != nil {
		_ = sh.Close(b.ctx)
		return 0, err
	}
	b.Federators = append(b.Federators, f)
	b.FederatorShared = append(b.FederatorShared, sh)
	b.announced = append(b.announced, ann)
	b.fedNATS = append(b.fedNATS, sh.NATS)
	b.fedSh = append(b.fedSh, sh)
	return i, nil
}

// StopFederator shuts federator i down gracefully (its requests in flight
// finish, bounded by ctx) and closes its connection.
func (b *Backend) StopFederator(ctx context.Context, i int) error {
	sh := b.fedSh[i]
	if sh == nil {
		return fmt.Errorf("federator %d already stopped", i)
	}
	b.fedSh[i] = nil
	return errors.Join(b.announced[i].Stop(), b.Federators[i].Shutdown(ctx), sh.Close(ctx))
}

// FederatorNATS returns the NATS connection of federator i (its
// statistics count the requests it received).
func (b *Backend) FederatorNATS(i int) *nats.Conn { return b.fedNATS[i] }

// Policies returns the federation policy of every running process of the
// backend (the federators', then the ingress's): each applies the dynamic
// config of the bucket on its own.
func (b *Backend) Policies() []*policy.Policy {
	var out []*policy.Policy
	for _, sh := range slices.Concat(b.fedSh, b.shared) {
		if sh != nil {
			out = append(out, sh.Policy)
		}
	}
	return out
}

// Notifier returns a component notifier of this backend.
func (b *Backend) Notifier(source string) *bus.Notifier {
	return bus.NewNotifier(b.JetStream, b.Subjects, source)
}

// Client returns a component client of this backend.
func (b *Backend) Client(source string) *bus.Client {
	return bus.NewClient(b.NATS, b.Subjects, source)
}

// serveIngress makes a new ingress, announces it (NATS service
// discovery) and serves it on ln.
func (b *Backend) serveIngress(ln net.Listener) error {
	in, err := ingress.New(b.icfg, b.ideps)
	if err != nil {
		return err
	}
	ann, err := setup.Announce(b.ideps.NATS, "ingress", &b.Common, in.Endpoints())
	if err != nil {
		return err
	}
	b.Ingress, b.ingressAnn = in, ann
	if b.wrap == nil {
		go func() { b.serveCh <- in.Serve(ln) }()
		return nil
	}
	b.wrapped = &http.Server{Handler: b.wrap(in), TLSConfig: b.ideps.Certs.ServerConfig(), ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError)}
	srv := b.wrapped
	go func() { b.serveCh <- srv.ServeTLS(ln, "", "") }()
	return nil
}

// StopIngress stops the ingress (bounded by ctx): its port is closed, as
// when the backend's ingress is down. StartIngress starts it again.
func (b *Backend) StopIngress(ctx context.Context) error {
	if b.Ingress == nil {
		return nil
	}
	var errs []error
	if b.ingressAnn != nil {
		_ = b.ingressAnn.Stop()
	}
	if b.wrapped != nil {
		errs = append(errs, b.wrapped.Shutdown(ctx))
	}
	errs = append(errs, b.Ingress.Shutdown(ctx))
	if err := <-b.serveCh; err != nil && !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, err)
	}
	b.Ingress, b.wrapped, b.ingressAnn = nil, nil, nil
	return errors.Join(errs...)
}

// StartIngress starts a new ingress on the address of the one StopIngress
// stopped.
func (b *Backend) StartIngress() error {
	ln, err := net.Listen("tcp", b.IngressAddr)
	if err != nil {
		return fmt.Errorf("start ingress: %w", err)
	}
	if err := b.serveIngress(ln); err != nil {
		_ = ln.Close()
		return fmt.Errorf("start ingress: %w", err)
	}
	return nil
}

// RestartNATS stops the backend's NATS server, as a crash would, and
// starts it again on the same port and JetStream store; every connection
// reconnects.
func (b *Backend) RestartNATS() error {
	ns, err := testbed.RestartNATS(b.NATSServer)
	if err != nil {
		b.NATSServer = nil
		return err
	}
	b.NATSServer = ns
	return nil
}

// Close stops the ingress, the federators, the connections and the NATS
// server, bounded by ctx.
func (b *Backend) Close(ctx context.Context) error {
	var errs []error
	for _, a := range b.announced {
		if a != nil {
			_ = a.Stop()
		}
	}
	if err := b.StopIngress(ctx); err != nil {
		errs = append(errs, err)
	}
	for i, f := range b.Federators {
		if b.fedSh[i] == nil {
			continue // stopped already
		}
		if err := f.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	b.cancel()
	for _, sh := range slices.Concat(b.fedSh, b.shared) {
		if sh == nil {
			continue
		}
		if err := sh.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if b.NATS != nil {
		b.NATS.Close()
	}
	if b.NATSServer != nil {
		b.NATSServer.Shutdown()
		b.NATSServer.WaitForShutdown()
	}
	return errors.Join(errs...)
}
