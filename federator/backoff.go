package federator

import (
	"container/heap"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Backoff after a remote's 429 (the contract is silent on it): a remote
// ingress that answers 429 too-many-requests asks us, with Retry-After, to
// wait. Until then this worker's further requests to that domain fail
// here with too-many-requests, without any network call, instead of
// hammering a backend that has already said it is over its limit.
const (
	// defaultRetryAfter is the wait of a 429 without a usable Retry-After.
	defaultRetryAfter = time.Second
	// maxRetryAfter caps the wait: a remote (or a broken header) cannot
	// cut it off for longer.
	maxRetryAfter = time.Minute
	// maxBackoffs bounds the domains remembered at once.
	maxBackoffs = 10000
)

// parseRetryAfter returns how long the Retry-After value v of a 429 asks
// us to wait (RFC 9110 section 10.2.3): delay-seconds (1*DIGIT), or an
// HTTP-date in any of the three forms of section 5.6.7, taken relative to
// ref (the response's Date, so that the two clocks of the remote agree,
// or our time of receipt). An absent or unparseable value (a sign, a
// fraction, garbage) gives defaultRetryAfter; a date not in the future
// gives 0 (retry now); every wait is capped at maxRetryAfter.
func parseRetryAfter(v string, ref time.Time) time.Duration {
	v = strings.Trim(v, " \t") // OWS
	if v == "" {
		return defaultRetryAfter
	}
	if allDigits(v) {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n >= uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter // out of range: a very long wait
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return defaultRetryAfter
	}
	return min(max(t.Sub(ref), 0), maxRetryAfter)
}

// allDigits reports whether s is one or more ASCII digits.
func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// backoffs remembers, per remote domain, until when the remote asked us
// to wait. Memory is bounded: an entry is dropped once it expires (at the
// next check or set), and at most max are kept (a new one evicts the one
// that expires first). The common case, no remote backed off, takes no
// lock. Safe for concurrent use.
type backoffs struct {
	max int
	now func() time.Time
	n   atomic.Int32 // len(byDomain), read without the lock

	mu       sync.Mutex
	byDomain map[string]*backoff
	order    backoffHeap // the same entries, the earliest expiry first
}

// backoff is one remote domain waiting for its Retry-After.
type backoff struct {
	domain string
	until  time.Time
	index  int // in backoffs.order
}

func newBackoffs(max int, now func() time.Time) *backoffs {
	if now == nil {
		now = time.Now
	}
	return &backoffs{max: max, now: now, byDomain: make(map[string]*backoff)}
}

// check returns until when requests to domain must wait, and whether
// they must.
func (b *backoffs) check(domain string) (time.Time, bool) {
	if b.n.Load() == 0 {
		return time.Time{}, false
	}
	now := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expireLocked(now)
	if e := b.byDomain[domain]; e != nil {
		return e.until, true
	}
	return time.Time{}, false
}

// set makes requests to domain wait until until (a later one than the
// current wait extends it, an earlier one changes nothing).
func (b *backoffs) set(domain string, until time.Time) {
	now := b.now()
	if !until.After(now) || b.max <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expireLocked(now)
	if e := b.byDomain[domain]; e != nil {
		if until.After(e.until) {
			e.until = until
			heap.Fix(&b.order, e.index)
		}
		return
	}
	if len(b.order) >= b.max {
		b.removeLocked(b.order[0]) // the one that expires first
	}
	e := &backoff{domain: domain, until: until}
	heap.Push(&b.order, e)
	b.byDomain[domain] = e
	b.n.Store(int32(len(b.order)))
}

// len returns how many domains are remembered.
func (b *backoffs) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.order)
}

// expireLocked drops the entries whose wait is over. b.mu must be held.
func (b *backoffs) expireLocked(now time.Time) {
	for len(b.order) > 0 && !now.Before(b.order[0].until) {
		b.removeLocked(b.order[0])
	}
}

// removeLocked drops e. b.mu must be held.
func (b *backoffs) removeLocked(e *backoff) {
	heap.Remove(&b.order, e.index)
	delete(b.byDomain, e.domain)
	b.n.Store(int32(len(b.order)))
}

// backoffHeap orders entries by expiry (container/heap).
type backoffHeap []*backoff

func (h backoffHeap) Len() int           { return len(h) }
func (h backoffHeap) Less(i, j int) bool { return h[i].until.Before(h[j].until) }
func (h backoffHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *backoffHeap) Push(x any) {
	e, ok := x.(*backoff)
	if !ok { // cannot happen: only set pushes, a *backoff
		return
	}
	e.index = len(*h)
	*h = append(*h, e)
}

func (h *backoffHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}
