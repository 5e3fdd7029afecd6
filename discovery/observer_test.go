package discovery_test

import (
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/test/testbed"
)

// counter is an Observer that counts.
type counter struct {
	mu      sync.Mutex
	lookups map[discovery.Result]int
	failed  int
}

func (c *counter) Lookup(srv bool, r discovery.Result) {
	if !srv {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lookups[r]++
}

func (c *counter) QueryFailed(srv bool) {
	if !srv {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failed++
}

func (c *counter) get() (hit, miss, stale, failed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lookups[discovery.Hit], c.lookups[discovery.Miss], c.lookups[discovery.Stale], c.failed
}

// TestObserver: the Observer is told of each lookup's result (miss, hit,
// stale) and of each failed DNS resolution.
func TestObserver(t *testing.T) {
	const domain = "b.example.com"
	obs := &counter{lookups: map[discovery.Result]int{}}
	e := newEnv(t, func(c *discovery.Config) {
		c.StaleFor = 10 * time.Minute
		c.Observer = obs
	})
	e.dns.SetSRV(domain, 60, testbed.SRVRecord{Target: "fed.b-infra.test", Port: 443})
	srv(t, e.r, domain) // miss
	srv(t, e.r, domain) // hit
	if hit, miss, stale, failed := obs.get(); hit != 1 || miss != 1 || stale != 0 || failed != 0 {
		t.Fatalf("hit %d miss %d stale %d failed %d, want 1 1 0 0", hit, miss, stale, failed)
	}
	e.dns.SetFailure(domain, dns.RcodeServerFailure)
	e.clock.Advance(61 * time.Second)
	srv(t, e.r, domain) // expired: asks DNS, which fails, and serves stale
	srv(t, e.r, domain) // stale without asking
	hit, miss, stale, failed := obs.get()
	if hit != 1 || miss != 2 || stale != 2 || failed != 1 {
		t.Errorf("hit %d miss %d stale %d failed %d, want 1 2 2 1", hit, miss, stale, failed)
	}
}
