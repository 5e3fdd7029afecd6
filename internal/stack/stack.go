// Package stack assembles the services that the fedbus binaries share (NATS
// connection, DNS resolver, federation policy, TLS material) from the
// configuration, for cmd/federator, cmd/ingress, the demo and end-to-end
// tests.
package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/federator/certs"
	"github.com/fedbus/fedbus/federator/discovery"
	"github.com/fedbus/fedbus/federator/policy"
)

// Shared are the services of one fedbus process.
type Shared struct {
	NATS     *nats.Conn
	Resolver *discovery.Resolver
	Policy   *policy.Policy
	Certs    *certs.Store
}

// Open builds the shared services; name identifies the NATS connection.
func Open(c config.Common, name string, log *slog.Logger) (*Shared, error) {
	store, err := certs.Load(certs.Files{Cert: c.TLSCert, Key: c.TLSKey, CA: c.TLSCA})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	pol, err := policy.New(c.Strategy, c.AllowList)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	res, err := discovery.New(discovery.Config{
		Servers:      c.DNSServers(),
		AllowPrivate: c.AllowPrivateTargets,
		Logger:       log.With("component", "discovery"),
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	nc, err := bus.Connect(c.NATSURL, name, log.With("component", "nats"))
	if err != nil {
		_ = res.Close()
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	return &Shared{NATS: nc, Resolver: res, Policy: pol, Certs: store}, nil
}

// Close drains the NATS connection (pending replies are flushed), waits
// for it to close (bounded by ctx) and stops the resolver.
func (s *Shared) Close(ctx context.Context) error {
	var errs []error
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
