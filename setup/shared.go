package setup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/discovery"
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

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// kvLoadTimeout bounds the wait for the dynamic federation config at start.
const kvLoadTimeout = 10 * time.Second

// Open builds the shared services; name identifies the NATS connection.
func Open(c config.Common, name string, log *slog.Logger) (*Shared, error) {
	store, err := tlsconf.Load(tlsconf.Files{Cert: c.TLSCert, Key: c.TLSKey, CA: c.TLSCA}, c.TLSMinVersion)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	pol, err := policy.New(c.Strategy, c.AllowList)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
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
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	natsOpts, err := c.NATS.Options()
	if err != nil {
		_ = res.Close()
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	nc, err := bus.Connect(c.NATSURL, name, log.With("component", "nats"), natsOpts...)
	if err != nil {
		_ = res.Close()
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	js, err := jetstream.New(nc)
	if err != nil { // cannot happen: only options could make it fail
		cancel()
		nc.Close()
		_ = res.Close()
		return nil, fmt.Errorf("open %s: jetstream: %w", name, err)
	}
	objects, err := bus.NewObjects(js, bus.ObjectsConfig{Bucket: c.ObjectBucket, TTL: c.ObjectTTL, MaxBytes: c.MaxObjectBytes, MaxTransfers: c.MaxObjectTransfers})
	if err != nil {
		cancel()
		nc.Close()
		_ = res.Close()
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	sh := &Shared{NATS: nc, JetStream: js, Objects: objects, Resolver: res, Policy: pol, Certs: store, cancel: cancel}
	sh.wg.Add(1)
	go func() {
		defer sh.wg.Done()
		store.Watch(ctx, c.TLSReloadInterval, log.With("component", "certs"))
	}()
	if c.KVBucket != "" {
		if err := sh.watchConfig(ctx, c, log); err != nil {
			cancel()
			sh.wg.Wait()
			nc.Close()
			_ = res.Close()
			return nil, fmt.Errorf("open %s: %w", name, err)
		}
	}
	return sh, nil
}

// watchConfig starts applying the dynamic federation config of the bucket
// and waits for its initial content.
func (s *Shared) watchConfig(ctx context.Context, c config.Common, log *slog.Logger) error {
	js := s.JetStream
	octx, cancel := context.WithTimeout(context.Background(), kvLoadTimeout)
	defer cancel()
	// The bucket is created by fedctl (or the operator), not here: the
	// federator and ingress only need to read it.
	st, err := policy.OpenStore(octx, js, c.KVBucket, false)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("bucket %s does not exist (FED_KV_BUCKET); create it with fedctl, e.g. 'fedctl rules clear': %w", c.KVBucket, err)
	}
	if err != nil {
		return err
	}
	w := policy.NewWatcher(st.KV(), s.Policy, log.With("component", "policy"))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = w.Run(ctx)
	}()
	select {
	case <-w.Loaded():
		return nil
	case <-octx.Done():
		return fmt.Errorf("load federation config from bucket %s: %w", c.KVBucket, octx.Err())
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
