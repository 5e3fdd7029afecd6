package setup

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/metrics"
	"github.com/fedbus/fedbus/ops"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/tlsconf"
)

// Shared are the services of one fedbus process.
type Shared struct {
	NATS *nats.Conn
	// JetStream is the JetStream API of NATS (the dynamic configuration,
	// and what later work keeps there).
	JetStream jetstream.JetStream
	// Objects moves large and streamed bodies through the JetStream
	// object store (contract section 8): FED_OBJECT_BUCKET,
	// FED_OBJECT_TTL, FED_MAX_OBJECT_BYTES, and FED_MAX_OBJECT_TRANSFERS
	// for the whole process.
	Objects  *bus.Objects
	Resolver *discovery.Resolver
	Policy   *policy.Policy
	Certs    *tlsconf.Store
	// Metrics are the process's metrics (served on FED_OPS_ADDR).
	Metrics *metrics.Metrics

	domain   string
	bucket   string
	certFile string                         // FED_TLS_CERT, for messages
	watcher  atomic.Pointer[policy.Watcher] // nil until the bucket is watched
	retry    chan struct{}                  // Reload: look for a missing bucket now
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

const (
	// kvLoadTimeout bounds the wait for the dynamic federation config at
	// start.
	kvLoadTimeout = 10 * time.Second
	// bucketRetry is how often a process whose bucket was missing at
	// start looks for it again.
	bucketRetry = 5 * time.Second
	// probeTimeout bounds the check of the NATS inbox permission.
	probeTimeout = 5 * time.Second
)

// Open builds the shared services; name identifies the NATS connection.
// The bucket of FED_KV_BUCKET (when set) must exist: Open fails at once
// when it does not.
func Open(c config.Common, name string, log *slog.Logger) (*Shared, error) {
	return open(c, name, log, false)
}

// open is Open; with waitForBucket, a bucket that cannot be opened is a
// warning instead: the static configuration applies until it can be
// (checked every bucketRetry, and on Reload).
func open(c config.Common, name string, log *slog.Logger, waitForBucket bool) (*Shared, error) {
	store, err := tlsconf.Load(tlsconf.Files{Cert: c.TLSCert, Key: c.TLSKey, CA: c.TLSCA}, c.TLSMinVersion)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	pol, err := policy.New(c.Strategy, c.AllowList)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	m := metrics.New(c.Components)
	m.SetListed(pol.Listed)
	m.SetCertificateExpiry(func() time.Time { return store.Leaf().NotAfter })
	identityStale := c.IdentityStaleGrace
	if identityStale == 0 {
		identityStale = -1 // discovery: none (its zero is the default)
	}
	res, err := discovery.New(discovery.Config{
		Servers:          c.DNSServers(),
		AllowPrivate:     c.AllowPrivateTargets,
		RequireDNSSEC:    c.RequireDNSSEC,
		MaxEntries:       c.DNSCacheEntries,
		IdentityStaleFor: identityStale,
		Logger:           log.With("component", "discovery"),
		Observer:         discoveryObserver{m},
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	natsOpts, err := c.NATS.Options()
	if err != nil {
		_ = res.Close()
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	// A refused subscription is then reported on the subscription, which
	// the inbox probe needs.
	natsOpts = append(natsOpts, nats.PermissionErrOnSubscribe(true))
	if c.NATSInOrder {
		natsOpts = append(natsOpts, nats.DontRandomize())
	}
	nc, err := bus.Connect(c.NATSURL, name, log.With("component", "nats"), natsOpts...)
	if err != nil {
		_ = res.Close()
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	if err := bus.ProbeInbox(nc, probeTimeout); err != nil {
		nc.Close()
		_ = res.Close()
		return nil, fmt.Errorf("open %s: %w", name, inboxHint(c.NATS, err))
	}
	ctx, cancel := context.WithCancel(context.Background())
	js, err := jetstream.New(nc)
	if err != nil { // cannot happen: only options could make it fail
		cancel()
		nc.Close()
		_ = res.Close()
		return nil, fmt.Errorf("open %s: jetstream: %w", name, err)
	}
	m.SetNATS(func() (bool, uint64) { return nc.IsConnected(), nc.Stats().Reconnects })
	objects, err := bus.NewObjects(js, bus.ObjectsConfig{Bucket: c.ObjectBucket, TTL: c.ObjectTTL, MaxBytes: c.MaxObjectBytes, MaxTransfers: c.MaxObjectTransfers, Replicas: c.JetStreamReplicas})
	if err != nil {
		cancel()
		nc.Close()
		_ = res.Close()
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	sh := &Shared{NATS: nc, JetStream: js, Objects: objects, Resolver: res, Policy: pol, Certs: store, Metrics: m,
		domain: c.Domain, bucket: c.KVBucket, certFile: c.TLSCert, retry: make(chan struct{}, 1), cancel: cancel}
	sh.wg.Add(1)
	go func() {
		defer sh.wg.Done()
		store.Watch(ctx, c.TLSReloadInterval, log.With("component", "certs"))
	}()
	if c.KVBucket != "" {
		if err := sh.watchConfig(ctx, c.KVBucket, log.With("component", "policy"), waitForBucket); err != nil {
			cancel()
			sh.wg.Wait()
			nc.Close()
			_ = res.Close()
			return nil, fmt.Errorf("open %s: %w", name, err)
		}
	}
	return sh, nil
}

// inboxHint adds the fix to a refused inbox subscription.
func inboxHint(a config.NATSAuth, err error) error {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return err
	}
	prefix := "FED_NATS_INBOX_PREFIX is not set (inbox _INBOX)"
	if a.InboxPrefix != "" {
		prefix = "FED_NATS_INBOX_PREFIX=" + a.InboxPrefix + " is not allowed"
	}
	user := a.User
	if user == "" {
		user = "<user>"
	}
	return fmt.Errorf("the NATS server refuses this process its replies (%s): set FED_NATS_INBOX_PREFIX to the inbox prefix the NATS user may subscribe to (_INBOX_%s with deploy/nats/fedbus.conf), or every request would wait for its deadline: %w", prefix, user, err)
}

// watchConfig starts applying the dynamic federation config of the bucket
// and waits for its initial content. When the bucket cannot be opened
// (missing, JetStream off, not allowed): with wait, a warning, and the
// bucket is looked for again in the background; else the error.
func (s *Shared) watchConfig(ctx context.Context, bucket string, log *slog.Logger, wait bool) error {
	// The bucket is created by fedctl (or the operator), not here: the
	// federator and ingress only need to read it.
	st, err := s.openBucket(bucket)
	if err == nil {
		w := s.startWatch(ctx, st, log)
		lctx, cancel := context.WithTimeout(ctx, kvLoadTimeout)
		defer cancel()
		select {
		case <-w.Loaded():
			return nil
		case <-lctx.Done():
			return fmt.Errorf("load federation config from bucket %s (FED_KV_BUCKET): %w", bucket, lctx.Err())
		}
	}
	err = bucketError(bucket, err)
	if !wait {
		return err
	}
	log.Warn("the static configuration (FED_STRATEGY, FED_ALLOW_LIST) applies alone until the bucket can be read: "+err.Error(),
		"bucket", bucket, "retry", bucketRetry.String())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.awaitBucket(ctx, bucket, log)
	}()
	return nil
}

// openBucket opens the bucket, bounded by kvLoadTimeout.
func (s *Shared) openBucket(bucket string) (*policy.Store, error) {
	octx, cancel := context.WithTimeout(context.Background(), kvLoadTimeout)
	defer cancel()
	return policy.OpenStore(octx, s.JetStream, bucket, 0)
}

// bucketError explains why the bucket cannot be used, with the fix.
func bucketError(bucket string, err error) error {
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		return fmt.Errorf("bucket %s (FED_KV_BUCKET) does not exist: create it with 'fedctl create', or set FED_KV_BUCKET= (empty) for the static configuration only: %w", bucket, err)
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return fmt.Errorf("bucket %s (FED_KV_BUCKET) needs JetStream, which the NATS server does not offer: enable it (nats-server -js), or set FED_KV_BUCKET= (empty) for the static configuration only: %w", bucket, err)
	default:
		return fmt.Errorf("open bucket %s (FED_KV_BUCKET): %w", bucket, err)
	}
}

// startWatch runs a watcher of the bucket until ctx ends.
func (s *Shared) startWatch(ctx context.Context, st *policy.Store, log *slog.Logger) *policy.Watcher {
	w := policy.NewWatcher(st.KV(), s.Policy, log)
	s.watcher.Store(w)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = w.Run(ctx)
	}()
	return w
}

// awaitBucket looks for the bucket every bucketRetry (or at once on
// Reload) until it can be opened, then watches it until ctx ends.
func (s *Shared) awaitBucket(ctx context.Context, bucket string, log *slog.Logger) {
	t := time.NewTicker(bucketRetry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.retry:
		}
		st, err := s.openBucket(bucket)
		if err != nil {
			log.Debug("bucket still not available", "bucket", bucket, "err", err)
			continue
		}
		log.Info("bucket found: the dynamic federation config applies from now on", "bucket", bucket)
		s.startWatch(ctx, st, log)
		return
	}
}

// Reload reads the certificate files again and the whole dynamic
// configuration (SIGHUP); a bucket that was missing is looked for at once.
// A certificate file that cannot be used keeps the previous one in
// service.
func (s *Shared) Reload(log *slog.Logger) {
	before := s.Certs.Leaf()
	err := s.Certs.Reload()
	switch leaf := s.Certs.Leaf(); {
	case err != nil:
		log.Error("certificate reload failed, keeping the previous certificate", "err", err)
	case leaf != before:
		log.Info("certificates reloaded", "serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter)
		if err := checkValidity(s.certFile, leaf, time.Now(), log); err != nil {
			log.Error("the reloaded certificate is not valid now", "err", err)
		}
	default:
		log.Info("certificates unchanged")
	}
	if w := s.watcher.Load(); w != nil {
		w.Reload()
		return
	}
	select {
	case s.retry <- struct{}{}:
	default:
	}
}

// Close drains the NATS connection (pending replies are flushed), waits
// for it to close (bounded by ctx) and stops the resolver.
func (s *Shared) Close(ctx context.Context) error {
	var errs []error
	s.cancel()
	s.wg.Wait()
	if err := s.NATS.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		errs = append(errs, fmt.Errorf("drain nats: %w", err))
	}
	for !s.NATS.IsClosed() && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if !s.NATS.IsClosed() {
		s.NATS.Close()
	}
	if err := s.Resolver.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close resolver: %w", err))
	}
	return errors.Join(errs...)
}

// discoveryObserver counts discovery's cache results and DNS failures.
type discoveryObserver struct{ m *metrics.Metrics }

func (o discoveryObserver) Lookup(srv bool, r discovery.Result) {
	res := metrics.LookupMiss
	switch r {
	case discovery.Hit:
		res = metrics.LookupHit
	case discovery.Stale:
		res = metrics.LookupStale
	}
	o.m.DiscoveryLookup(srv, res)
}

func (o discoveryObserver) QueryFailed(srv bool) { o.m.DNSError(srv) }

// Checks returns the readiness checks of the shared services: NATS
// connected, the certificate loaded and valid now, the federation policy
// loaded, the DNS servers answering.
func (s *Shared) Checks() []ops.Check {
	return []ops.Check{
		{Name: "nats", Run: func(context.Context) error {
			if !s.NATS.IsConnected() {
				return fmt.Errorf("not connected to NATS (FED_NATS_URL): %s", s.NATS.Status())
			}
			return ops.Passed("connected to %s", s.NATS.ConnectedUrlRedacted())
		}},
		{Name: "certificates", Run: func(context.Context) error {
			return CheckCertificate(s.Certs.Leaf(), time.Now())
		}},
		{Name: "policy", Run: func(context.Context) error {
			static, dynamic := s.Policy.Counts()
			detail := fmt.Sprintf("strategy %s, %d domain(s) in FED_ALLOW_LIST", s.Policy.Strategy(), static)
			if s.bucket != "" {
				detail += fmt.Sprintf(", %d remote(s) from bucket %s", dynamic, s.bucket)
			}
			return ops.Passed("%s", detail)
		}},
		{Name: "dns", Run: func(ctx context.Context) error {
			if err := s.Resolver.Ping(ctx, s.domain); err != nil {
				return fmt.Errorf("FED_DNS_SERVER does not answer: %w", err)
			}
			return nil
		}},
	}
}

// CheckCertificate is the readiness check of this backend's certificate:
// loaded and valid at now. A passing check shows when it expires.
func CheckCertificate(leaf *x509.Certificate, now time.Time) error {
	switch {
	case leaf == nil:
		return errors.New("no certificate loaded (FED_TLS_CERT)")
	case now.After(leaf.NotAfter):
		return fmt.Errorf("certificate %s expired at %s: replace FED_TLS_CERT and FED_TLS_KEY", names(leaf), leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("certificate %s is not valid before %s", names(leaf), leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return ops.Passed("%s valid until %s", names(leaf), leaf.NotAfter.UTC().Format(time.RFC3339))
}

func names(c *x509.Certificate) string {
	if len(c.DNSNames) == 0 {
		return c.Subject.String()
	}
	return strings.Join(c.DNSNames, ",")
}
