package discovery_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/test/testbed"
)

// env is a testbed DNS server, a fake clock, a captured log and a
// Resolver using them.
type env struct {
	dns   *testbed.DNS
	clock *testbed.Clock
	log   *testbed.LogBuffer
	r     *discovery.Resolver
}

// newEnv starts a DNS server and a Resolver asking it (after the servers
// in cfg.Servers, if any), with a fake clock and a captured log. mutate,
// when not nil, adjusts the config before New.
func newEnv(tb testing.TB, mutate func(*discovery.Config)) *env {
	tb.Helper()
	e := &env{dns: testbed.StartDNS(tb), clock: testbed.NewClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)), log: &testbed.LogBuffer{}}
	cfg := discovery.Config{
		Now:    e.clock.Now,
		Logger: slog.New(slog.NewTextHandler(e.log, nil)),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	cfg.Servers = append(cfg.Servers, e.dns.Addr())
	e.r = newResolver(tb, cfg)
	return e
}

// newResolver returns a Resolver closed in tb's cleanup.
func newResolver(tb testing.TB, cfg discovery.Config) *discovery.Resolver {
	tb.Helper()
	r, err := discovery.New(cfg)
	if err != nil {
		tb.Fatalf("discovery.New: %v", err)
	}
	tb.Cleanup(func() {
		if err := r.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return r
}

// closedAddr returns a 127.0.0.1 address where nothing listens (UDP).
func closedAddr(tb testing.TB) string {
	tb.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	if err := pc.Close(); err != nil {
		tb.Fatal(err)
	}
	return addr
}

// srv is SRV with a test context, failing tb on error.
func srv(tb testing.TB, r *discovery.Resolver, domain string) []discovery.Target {
	tb.Helper()
	ts, err := r.SRV(context.Background(), domain)
	if err != nil {
		tb.Fatalf("SRV(%s): %v", domain, err)
	}
	return ts
}

// hosts returns the hosts of ts.
func hosts(ts []discovery.Target) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Host
	}
	return out
}

// eventually polls cond until it holds, failing tb after 5s.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// setA sets address records, failing tb on a bad address.
func setA(tb testing.TB, d *testbed.DNS, host string, ttl uint32, ips ...string) {
	tb.Helper()
	if err := d.SetA(host, ttl, ips...); err != nil {
		tb.Fatal(err)
	}
}
