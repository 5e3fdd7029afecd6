package ingress

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Refusal reasons of originLimiter.acquire.
const (
	refusedNone        = iota
	refusedConcurrency // the origin has OriginConcurrency requests in flight
	refusedRate        // the origin's token bucket is empty
)

// Eviction of idle origins (bounded memory): the map is swept at most
// every sweepEvery, and whenever it has grown to nextSweep entries.
const (
	sweepEvery = time.Minute
	minSweep   = 1024
	// warnEvery bounds the warnings about one origin over its limits; the
	// refusals themselves are logged at debug level (a flood must not
	// become a flood of log lines).
	warnEvery = time.Minute
	// concurrencyRetry is the Retry-After of a refusal for concurrency:
	// a slot frees when a request finishes, which cannot be predicted.
	concurrencyRetry = time.Second
)

// originLimiter applies the per-origin limits of the ingress: a token
// bucket (rate, burst) and a bound on the requests in flight. It keeps one
// state per origin domain; a state that is equivalent to a new one (no
// request in flight, bucket full) is dropped by the periodic sweep, so
// memory follows the set of recently active origins and an origin cannot
// reset its budget by making its state disappear. Safe for concurrent use.
type originLimiter struct {
	limit       rate.Limit // 0: no rate limit
	burst       int
	maxInFlight int // 0: no limit
	now         func() time.Time
	sweepEvery  time.Duration

	mu        sync.Mutex
	origins   map[string]*originState
	nextSweep int
	lastSweep time.Time
}

// originState is the state of one origin.
type originState struct {
	bucket   *rate.Limiter // nil without a rate limit
	inFlight int
	refused  int       // refusals since the last warning
	warnedAt time.Time // zero: never warned
}

// newOriginLimiter returns the limiter of rps requests per second with
// burst, and at most maxInFlight in flight per origin (0: no limit for
// either), or nil when nothing is limited.
func newOriginLimiter(rps float64, burst, maxInFlight int, now func() time.Time) *originLimiter {
	if rps <= 0 && maxInFlight <= 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	l := &originLimiter{
		maxInFlight: max(maxInFlight, 0),
		now:         now,
		sweepEvery:  sweepEvery,
		origins:     make(map[string]*originState),
		nextSweep:   minSweep,
		lastSweep:   now(),
	}
	if rps > 0 {
		l.limit, l.burst = rate.Limit(rps), max(burst, 1)
	}
	return l
}

// limitRefusal is the outcome of a refused acquire.
type limitRefusal struct {
	reason     int
	retryAfter time.Duration
	// warn is set (with the refusals since the last warning) when this
	// refusal is to be logged as a warning.
	warn    bool
	refused int
}

// acquire takes a slot of origin for one request. When it returns true,
// release must be called once the request is done.
func (l *originLimiter) acquire(origin string) (bool, limitRefusal) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.origins) >= l.nextSweep || now.Sub(l.lastSweep) >= l.sweepEvery {
		l.sweepLocked(now)
	}
	st := l.origins[origin]
	if st == nil {
		st = &originState{}
		if l.limit > 0 {
			st.bucket = rate.NewLimiter(l.limit, l.burst)
		}
		l.origins[origin] = st
	}
	var r limitRefusal
	switch {
	case l.maxInFlight > 0 && st.inFlight >= l.maxInFlight:
		r = limitRefusal{reason: refusedConcurrency, retryAfter: concurrencyRetry}
	case st.bucket != nil && !st.bucket.AllowN(now, 1):
		// The time until one token is back.
		missing := 1 - st.bucket.TokensAt(now)
		r = limitRefusal{reason: refusedRate, retryAfter: time.Duration(missing / float64(l.limit) * float64(time.Second))}
	default:
		st.inFlight++
		return true, limitRefusal{}
	}
	st.refused++
	if st.warnedAt.IsZero() || now.Sub(st.warnedAt) >= warnEvery {
		r.warn, r.refused = true, st.refused
		st.warnedAt, st.refused = now, 0
	}
	return false, r
}

// release gives back the slot of a successful acquire.
func (l *originLimiter) release(origin string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.origins[origin]
	if st == nil {
		return // cannot happen: a state in use is never swept
	}
	st.inFlight--
	if st.inFlight <= 0 && st.bucket == nil && st.refused == 0 {
		delete(l.origins, origin) // nothing else to remember
	}
}

// sweepLocked drops the states equivalent to a new one: no request in
// flight, a full bucket and no refusal left to report. l.mu must be held.
func (l *originLimiter) sweepLocked(now time.Time) {
	for origin, st := range l.origins {
		if st.inFlight > 0 {
			continue
		}
		if st.bucket != nil && st.bucket.TokensAt(now) < float64(l.burst) {
			continue
		}
		if st.refused > 0 && now.Sub(st.warnedAt) < warnEvery {
			continue
		}
		delete(l.origins, origin)
	}
	l.lastSweep = now
	l.nextSweep = max(minSweep, 2*len(l.origins))
}

// len returns how many origins have a state.
func (l *originLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.origins)
}

// retryAfterSeconds is the Retry-After value of d: whole seconds, at least
// 1.
func retryAfterSeconds(d time.Duration) int64 {
	s := math.Ceil(d.Seconds())
	if s < 1 || math.IsNaN(s) {
		return 1
	}
	if s > 3600 {
		return 3600
	}
	return int64(s)
}
