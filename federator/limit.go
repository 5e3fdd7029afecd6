package federator

import (
	"sync"
	"sync/atomic"
)

// remoteLimiter bounds the requests in flight per remote domain. Counters
// exist only while a domain has requests in flight, so the map stays as
// small as the set of busy remotes.
type remoteLimiter struct {
	max      atomic.Int64 // 0: no limit
	mu       sync.Mutex
	inFlight map[string]int
}

func newRemoteLimiter(max int) *remoteLimiter {
	l := &remoteLimiter{inFlight: make(map[string]int)}
	l.max.Store(int64(max))
	return l
}

// acquire takes a slot for domain; false when the domain is at its limit.
func (l *remoteLimiter) acquire(domain string) bool {
	max := int(l.max.Load())
	if max <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inFlight[domain] >= max {
		return false
	}
	l.inFlight[domain]++
	return true
}

// release gives back a slot taken by acquire.
func (l *remoteLimiter) release(domain string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.inFlight[domain] - 1; n > 0 {
		l.inFlight[domain] = n
	} else {
		delete(l.inFlight, domain)
	}
}
