package discovery

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/fedbus/fedbus/test/testbed"
)

// TestCacheBound: a cache never holds more than its bound, however many
// distinct names pass through it (100,000 here), and what it drops are the
// least recently used entries: an entry in use stays.
func TestCacheBound(t *testing.T) {
	const bound, names = 1000, 100000
	c := newCache(kindSRV, bound)
	hot := &entry{staleUntil: mono(time.Hour)}
	c.mu.Lock()
	c.putLocked("hot.example.com", hot, 0)
	c.mu.Unlock()
	for i := 1; i <= names; i++ {
		now := mono(i)
		hot.touch(now) // in use all along
		c.mu.Lock()
		c.putLocked(fmt.Sprintf("d%d.example.com", i), &entry{staleUntil: mono(time.Hour)}, now)
		n := c.n
		c.mu.Unlock()
		if n > bound {
			t.Fatalf("after %d names the cache holds %d entries, over its bound of %d", i, n, bound)
		}
	}
	if c.get("hot.example.com") != hot {
		t.Error("the entry in use was dropped")
	}
	if c.get("d1.example.com") != nil {
		t.Error("the oldest entry was kept")
	}
	if c.get(fmt.Sprintf("d%d.example.com", names)) == nil {
		t.Error("the newest entry was dropped")
	}
	counted := 0
	c.m.Range(func(any, any) bool { counted++; return true })
	if counted != c.len() {
		t.Errorf("the cache counts %d entries but holds %d", c.len(), counted)
	}
}

// TestResolverCacheBound: through a Resolver, distinct names looked up
// (positive and negative answers) stay within MaxEntries per cache.
func TestResolverCacheBound(t *testing.T) {
	dns := testbed.StartDNS(t)
	for i := range 100 {
		dns.SetSRV(fmt.Sprintf("p%d.example.com", i), 3600, testbed.SRVRecord{Target: "fed.example.net", Port: 443})
	}
	const bound = 50
	r, err := New(Config{Servers: []string{dns.Addr()}, MaxEntries: bound, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	ctx := context.Background()
	for i := range 1000 {
		domain := fmt.Sprintf("p%d.example.com", i) // the first 100 exist, the rest are NXDOMAIN
		if _, err := r.HasTarget(ctx, domain, "fed.example.net"); err != nil && i < 100 {
			t.Fatalf("HasTarget(%s): %v", domain, err)
		}
		if n := r.srv.len(); n > bound {
			t.Fatalf("after %d names the SRV cache holds %d entries, over MaxEntries %d", i+1, n, bound)
		}
	}
}
