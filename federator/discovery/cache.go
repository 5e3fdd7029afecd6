package discovery

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// kind is what a cache holds.
type kind uint8

const (
	kindSRV  kind = iota // SRV records of a domain
	kindAddr             // A and AAAA records of a host
)

func (k kind) String() string {
	if k == kindSRV {
		return "SRV"
	}
	return "A/AAAA"
}

// group is one priority's range of entry.targets, with its sum of weights
// and count of weight-0 records.
type group struct {
	start, end int
	sum        uint32
	zeros      int
}

// entry is one cached answer. Its answer fields are immutable once
// published in a cache; the failure state is guarded by mu.
type entry struct {
	// SRV: targets sorted by priority, one group per priority.
	targets []Target
	groups  []group
	// A/AAAA: the addresses kept (after the private rule) and how many
	// were refused.
	addrs   []netip.Addr
	refused int
	// neg is the sentinel of a negative answer (ErrNotFound,
	// ErrServiceUnavailable, ErrNoAddress), nil for a positive one.
	neg error

	expires    time.Time // end of the TTL
	refreshAt  time.Time // a hit from here on starts a background refresh
	staleUntil time.Time // serve-stale limit (positive answers only)
	refreshing atomic.Bool

	mu      sync.Mutex
	failing bool      // the last refresh failed: serve stale without waiting
	retryAt time.Time // when failing, next refresh attempt
	lastErr error     // the last refresh error, for the log
	logged  bool      // the stale answer was logged
}

// stale reports whether e may be served stale at now.
func (e *entry) stale(now time.Time) bool {
	return e.neg == nil && now.Before(e.staleUntil)
}

// call is one in-flight resolution shared by all lookups of a name.
type call struct {
	done chan struct{}
	e    *entry // set before done is closed, when err is nil
	err  error
}

// cache maps a name to its entry and to its in-flight resolution.
type cache struct {
	kind      kind
	mu        sync.RWMutex
	m         map[string]*entry
	flights   map[string]*call
	nextSweep int
}

// minSweep is the cache size from which inserts sweep out dead entries.
const minSweep = 1024

func newCache(k kind) cache {
	return cache{kind: k, m: make(map[string]*entry), flights: make(map[string]*call), nextSweep: minSweep}
}

// putLocked stores e for name, first dropping entries that can no longer
// be served when the cache has grown. c.mu must be held for writing.
func (c *cache) putLocked(name string, e *entry, now time.Time) {
	if len(c.m) >= c.nextSweep {
		for k, old := range c.m {
			if !now.Before(old.staleUntil) {
				delete(c.m, k)
			}
		}
		c.nextSweep = max(minSweep, 2*len(c.m))
	}
	c.m[name] = e
}

// lookup returns the entry of name in c: from the cache when it is fresh
// (starting a background refresh in the last 20% of its TTL), stale when a
// recent refresh failed, else after resolving it (shared with concurrent
// lookups). The error wraps ErrLookup or ctx's error.
func (r *Resolver) lookup(ctx context.Context, c *cache, name string) (*entry, error) {
	c.mu.RLock()
	e := c.m[name]
	c.mu.RUnlock()
	if e != nil {
		now := r.now()
		if now.Before(e.expires) {
			if !now.Before(e.refreshAt) && !e.refreshing.Load() && e.refreshing.CompareAndSwap(false, true) {
				r.startFlight(c, name)
			}
			return e, nil
		}
		if e.stale(now) {
			serve, retry := r.staleState(e, now)
			if serve {
				if retry {
					r.startFlight(c, name)
				}
				r.noteStale(c, name, e, now)
				return e, nil
			}
		}
	}
	cl := r.startFlight(c, name)
	if cl == nil {
		return nil, errClosed
	}
	select {
	case <-cl.done:
		if cl.err != nil {
			return nil, cl.err
		}
		return cl.e, nil
	case <-ctx.Done():
		// The caller's deadline beats the DNS servers: a stale answer is
		// better than none (RFC 8767's client response timer).
		if now := r.now(); e != nil && e.stale(now) {
			e.mu.Lock()
			if e.lastErr == nil {
				e.lastErr = ctx.Err()
			}
			e.mu.Unlock()
			r.noteStale(c, name, e, now)
			return e, nil
		}
		return nil, ctx.Err()
	}
}

// staleState reports whether the expired entry e is to be served stale
// without waiting (its last refresh failed), and whether a new refresh
// attempt is due (at most one per StaleRetry).
func (r *Resolver) staleState(e *entry, now time.Time) (serve, retry bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.failing {
		return false, false
	}
	if !now.Before(e.retryAt) {
		e.retryAt = now.Add(r.cfg.StaleRetry)
		return true, true
	}
	return true, false
}

// noteStale logs, once per entry, that name is served from a stale answer.
func (r *Resolver) noteStale(c *cache, name string, e *entry, now time.Time) {
	e.mu.Lock()
	if e.logged {
		e.mu.Unlock()
		return
	}
	e.logged = true
	err := e.lastErr
	e.mu.Unlock()
	r.log.Warn("discovery: DNS lookup failed, serving stale answer",
		"name", name,
		"type", c.kind.String(),
		"expired_ago", now.Sub(e.expires).Round(time.Millisecond),
		"stale_until", e.staleUntil,
		"error", err)
}

// startFlight returns the in-flight resolution of name, starting one in a
// tracked goroutine when there is none. It returns nil after Close.
func (r *Resolver) startFlight(c *cache, name string) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl := c.flights[name]; cl != nil {
		return cl
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.wg.Add(1)
	r.mu.Unlock()
	cl := &call{done: make(chan struct{})}
	c.flights[name] = cl
	go r.fly(c, name, cl)
	return cl
}

// fly resolves name for cl and publishes the result: a new answer replaces
// the cached entry; a failure keeps a cached positive answer, marks it
// failing and hands it out while it may be served stale.
func (r *Resolver) fly(c *cache, name string, cl *call) {
	defer r.wg.Done()
	var (
		e   *entry
		err error
	)
	if c.kind == kindSRV {
		e, err = r.resolveSRV(r.ctx, name)
	} else {
		e, err = r.resolveAddrs(r.ctx, name)
	}
	now := r.now()
	serveStale := false
	c.mu.Lock()
	old := c.m[name]
	switch {
	case err == nil:
		c.putLocked(name, e, now)
		cl.e = e
	case old != nil && old.stale(now):
		old.mu.Lock()
		if !old.failing {
			old.failing = true
			old.retryAt = now.Add(r.cfg.StaleRetry)
		}
		old.lastErr = err
		old.mu.Unlock()
		cl.e = old
		serveStale = !now.Before(old.expires)
	default:
		cl.err = err
	}
	delete(c.flights, name)
	c.mu.Unlock()
	close(cl.done)
	if serveStale {
		r.noteStale(c, name, old, now)
	}
}
