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
	// authentic: the answer carried the AD flag (DNSSEC-validated by the
	// resolver); asked for with RequireDNSSEC only.
	authentic bool

	// used is when the entry was last handed out (a mono, at the coarse
	// clock's resolution): the least recently used entries are dropped
	// when the cache is full.
	used atomic.Int64

	expires    mono // end of the TTL
	refreshAt  mono // a hit from here on starts a background refresh
	staleUntil mono // serve-stale limit (positive answers only)
	refreshing atomic.Bool

	mu      sync.Mutex
	failing bool  // the last refresh failed: serve stale without waiting
	retryAt mono  // when failing, next refresh attempt
	lastErr error // the last refresh error, for the log
	logged  bool  // the stale answer was logged
}

// stale reports whether e may be served stale at now.
func (e *entry) stale(now mono) bool {
	return e.neg == nil && now < e.staleUntil
}

// call is one in-flight resolution shared by all lookups of a name. Its
// fields are set before done is closed: e is the new entry when err is
// nil; when err is not nil, e is the cached entry that may be served stale
// (or nil). cancel ends the context of its queries (Close).
type call struct {
	done   chan struct{}
	cancel context.CancelFunc
	e      *entry
	err    error
}

// cache maps a name to its entry and to its in-flight resolution. Entries
// are read without locking (sync.Map: no shared write on a cache hit, so
// hits scale across cores); mu serialises the writers and guards flights.
// It holds at most max entries: names come from whoever sends us a domain
// (an origin, a target), so nothing else bounds them. When it is full, the
// least recently used entries go, as a second-chance FIFO (CLOCK) finds
// them: the oldest name goes unless it was used since it was queued (then
// it is queued again). That costs O(1) per new name, and a hit only the
// touch of its entry.
type cache struct {
	kind      kind
	max       int      // bound on the entries
	m         sync.Map // string -> *entry
	mu        sync.Mutex
	n         int // entries in m
	flights   map[string]*call
	nextSweep int
	// queue holds the names of m in the order they are to be considered
	// for eviction (queue[head:]), each with the entry's last use when it
	// was queued.
	queue []queued
	head  int
}

// queued is a name waiting in the eviction queue.
type queued struct {
	name string
	used int64
}

// minSweep is the cache size from which inserts sweep out dead entries.
const minSweep = 1024

func newCache(k kind, max int) *cache {
	return &cache{kind: k, max: max, flights: make(map[string]*call), nextSweep: minSweep}
}

// touch records that e was handed out at now (one shared write per entry
// per tick of the coarse clock at most).
func (e *entry) touch(now mono) {
	if mono(e.used.Load()) < now {
		e.used.Store(int64(now))
	}
}

// get returns the entry of name, or nil.
func (c *cache) get(name string) *entry {
	v, ok := c.m.Load(name)
	if !ok {
		return nil
	}
	return v.(*entry)
}

// putLocked stores e for name, first dropping entries that can no longer
// be served when the cache has grown, then the least recently used ones
// while it holds more than max. c.mu must be held.
func (c *cache) putLocked(name string, e *entry, now mono) {
	if c.n >= c.nextSweep {
		c.sweepLocked(now)
	}
	e.used.Store(int64(now))
	if _, loaded := c.m.Swap(name, e); !loaded {
		c.n++
		c.queue = append(c.queue, queued{name, int64(now)})
	}
	for c.n > c.max && c.evictLocked() {
	}
}

// sweepLocked drops the entries that can no longer be served, and their
// names from the queue. c.mu must be held.
func (c *cache) sweepLocked(now mono) {
	c.m.Range(func(k, v any) bool {
		if now >= v.(*entry).staleUntil {
			c.m.Delete(k)
			c.n--
		}
		return true
	})
	c.nextSweep = max(minSweep, 2*c.n)
	live := make([]queued, 0, c.n)
	seen := make(map[string]bool, c.n)
	for _, q := range c.queue[c.head:] {
		if !seen[q.name] && c.get(q.name) != nil {
			seen[q.name] = true
			live = append(live, q)
		}
	}
	c.queue, c.head = live, 0
}

// evictLocked drops one entry: the first of the queue not used since it
// was queued (those used are queued again, with their last use). After
// two rounds of the queue without finding one (every entry in use all
// along), the first is dropped regardless. It reports whether it dropped
// one. c.mu must be held.
func (c *cache) evictLocked() bool {
	for rounds := 2 * (len(c.queue) - c.head); c.head < len(c.queue); rounds-- {
		q := c.queue[c.head]
		c.queue[c.head] = queued{}
		c.head++
		if c.head > len(c.queue)/2 && c.head >= 64 { // reuse the front of the slice
			n := copy(c.queue, c.queue[c.head:])
			clear(c.queue[n:])
			c.queue, c.head = c.queue[:n], 0
		}
		e := c.get(q.name)
		if e == nil {
			continue // already dropped (a name queued twice)
		}
		if used := e.used.Load(); used > q.used && rounds > 0 {
			c.queue = append(c.queue, queued{q.name, used}) // a second chance
			continue
		}
		if _, ok := c.m.LoadAndDelete(q.name); ok {
			c.n--
			return true
		}
	}
	return false
}

// len returns how many entries c holds.
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// lookup returns the entry of name in c: from the cache when it is fresh
// (starting a background refresh in the last 20% of its TTL), stale when a
// recent refresh failed, else after resolving it (shared with concurrent
// lookups). The error wraps ErrLookup or ctx's error.
func (r *Resolver) lookup(ctx context.Context, c *cache, name string) (*entry, error) {
	srv := c.kind == kindSRV
	e := c.get(name)
	if e != nil {
		now := r.nowFast()
		e.touch(now)
		if now < e.expires {
			if now >= e.refreshAt && !e.refreshing.Load() && e.refreshing.CompareAndSwap(false, true) {
				r.startFlight(c, name)
			}
			r.cfg.Observer.Lookup(srv, Hit)
			return e, nil
		}
		if e.stale(now) {
			serve, retry := r.staleState(e, now)
			if serve {
				if retry {
					r.startFlight(c, name)
				}
				r.noteStale(c, name, e, now)
				r.cfg.Observer.Lookup(srv, Stale)
				return e, nil
			}
		}
	}
	r.cfg.Observer.Lookup(srv, Miss)
	cl := r.joinFlight(c, name, e)
	if cl == nil {
		return nil, errClosed
	}
	select {
	case <-cl.done:
		if cl.err == nil {
			return cl.e, nil
		}
		// The flight failed; its stale answer is judged at this caller's
		// time, which may be later than the flight's.
		if cl.e != nil && cl.e.stale(r.now()) {
			r.cfg.Observer.Lookup(srv, Stale)
			return cl.e, nil
		}
		return nil, cl.err
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
			r.cfg.Observer.Lookup(srv, Stale)
			return e, nil
		}
		return nil, ctx.Err()
	}
}

// staleState reports whether the expired entry e is to be served stale
// without waiting (its last refresh failed), and whether a new refresh
// attempt is due (at most one per StaleRetry).
func (r *Resolver) staleState(e *entry, now mono) (serve, retry bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.failing {
		return false, false
	}
	if now >= e.retryAt {
		e.retryAt = now.add(r.cfg.StaleRetry)
		return true, true
	}
	return true, false
}

// noteStale logs, once per entry, that name is served from a stale answer.
func (r *Resolver) noteStale(c *cache, name string, e *entry, now mono) {
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
		"expired_ago", time.Duration(now-e.expires).Round(time.Millisecond),
		"stale_for", time.Duration(e.staleUntil-now).Round(time.Second),
		"error", err)
}

// startFlight returns the in-flight resolution of name, starting one in a
// tracked goroutine when there is none. It returns nil after Close.
//
// A flight outlives the lookups that wait for it (a refresh has none), so
// its queries get a context of their own, cancelled by Close (see
// cancelFlights): a flight registered in c.flights before Close set closed
// is seen there by Close, and none starts after.
func (r *Resolver) startFlight(c *cache, name string) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return r.startFlightLocked(c, name)
}

// joinFlight is startFlight for a lookup that found no usable entry (it saw
// seen, possibly nil): when a flight finished between the lookup's read and
// now and stored a fresh entry, that entry is returned as a finished call
// instead of asking DNS again (the read and the flight's end are not one
// critical section).
func (r *Resolver) joinFlight(c *cache, name string, seen *entry) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.get(name); cur != nil && cur != seen && r.now() < cur.expires {
		done := make(chan struct{})
		close(done)
		return &call{done: done, cancel: func() {}, e: cur}
	}
	return r.startFlightLocked(c, name)
}

// startFlightLocked is startFlight with c.mu held.
func (r *Resolver) startFlightLocked(c *cache, name string) *call {
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
	ctx, cancel := context.WithCancel(context.Background())
	cl := &call{done: make(chan struct{}), cancel: cancel}
	c.flights[name] = cl
	go r.fly(ctx, c, name, cl)
	return cl
}

// cancelFlights cancels the queries of every flight of c (Close).
func (c *cache) cancelFlights() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cl := range c.flights {
		cl.cancel()
	}
}

// fly resolves name for cl with ctx and publishes the result: a new answer
// replaces the cached entry; a failure keeps a cached positive answer,
// marks it failing and hands it out while it may be served stale.
func (r *Resolver) fly(ctx context.Context, c *cache, name string, cl *call) {
	defer r.wg.Done()
	defer cl.cancel()
	var (
		e   *entry
		err error
	)
	if c.kind == kindSRV {
		e, err = r.resolveSRV(ctx, name)
	} else {
		e, err = r.resolveAddrs(ctx, name)
	}
	if err != nil {
		r.cfg.Observer.QueryFailed(c.kind == kindSRV)
	}
	now := r.now()
	serveStale := false
	c.mu.Lock()
	old := c.get(name)
	switch {
	case err == nil:
		c.putLocked(name, e, now)
		cl.e = e
	case old != nil && old.stale(now):
		old.mu.Lock()
		if !old.failing {
			old.failing = true
			old.retryAt = now.add(r.cfg.StaleRetry)
		}
		old.lastErr = err
		old.mu.Unlock()
		cl.e, cl.err = old, err
		serveStale = now >= old.expires
	default:
		cl.err = err
	}
	delete(c.flights, name)
	c.mu.Unlock()
	if serveStale {
		r.noteStale(c, name, old, now) // before the waiters return
	}
	close(cl.done)
}
