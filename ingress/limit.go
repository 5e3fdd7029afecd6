package ingress

import (
	"crypto/sha256"
	"crypto/x509"
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

// keyLimiter applies per-key limits of the ingress: a token bucket (rate,
// burst) and a bound on the requests in flight. The keys are origin
// domains (originLimiter) or client certificates (certLimiter). It keeps
// one state per key; a state that is equivalent to a new one (no request
// in flight, bucket full) is dropped by the periodic sweep, so memory
// follows the set of recently active keys and a key cannot reset its
// budget by making its state disappear. Safe for concurrent use.
type keyLimiter[K comparable] struct {
	limit       rate.Limit // 0: no rate limit
	burst       int
	maxInFlight int // 0: no limit
	now         func() time.Time
	sweepEvery  time.Duration

	mu        sync.Mutex
	origins   map[K]*originState
	nextSweep int
	lastSweep time.Time
}

// originLimiter limits each origin domain (once proven).
type originLimiter = keyLimiter[string]

// certKey is a client certificate's SHA-256 fingerprint.
type certKey [sha256.Size]byte

// certLimiter limits each client certificate, whatever origins it proves.
type certLimiter = keyLimiter[certKey]

// fingerprint returns the key of a certificate.
func fingerprint(c *x509.Certificate) certKey { return sha256.Sum256(c.Raw) }

// originState is the state of one key.
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
	return newKeyLimiter[string](rps, burst, maxInFlight, now)
}

// newCertLimiter is newOriginLimiter for client certificates.
func newCertLimiter(rps float64, burst, maxInFlight int, now func() time.Time) *certLimiter {
	return newKeyLimiter[certKey](rps, burst, maxInFlight, now)
}

func newKeyLimiter[K comparable](rps float64, burst, maxInFlight int, now func() time.Time) *keyLimiter[K] {
	if rps <= 0 && maxInFlight <= 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	l := &keyLimiter[K]{
		maxInFlight: max(maxInFlight, 0),
		now:         now,
		sweepEvery:  sweepEvery,
		origins:     make(map[K]*originState),
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
func (l *keyLimiter[K]) acquire(origin K) (bool, limitRefusal) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.stateLocked(origin, now)
	var r limitRefusal
	switch {
	case l.maxInFlight > 0 && st.inFlight >= l.maxInFlight:
		r = limitRefusal{reason: refusedConcurrency, retryAfter: concurrencyRetry}
	case st.bucket != nil && !st.bucket.AllowN(now, 1):
		r = l.rateRefusal(st, now)
	default:
		st.inFlight++
		return true, limitRefusal{}
	}
	return false, l.refusedLocked(st, r, now)
}

// ready reports whether key has a token left, without taking it: the
// check of a budget that only failures spend (see spend). A refusal is
// counted for the warnings as acquire's are.
func (l *keyLimiter[K]) ready(key K) (bool, limitRefusal) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.origins[key]
	if st == nil || st.bucket == nil || st.bucket.TokensAt(now) >= 1 {
		return true, limitRefusal{}
	}
	return false, l.refusedLocked(st, l.rateRefusal(st, now), now)
}

// spend takes a token of key, if one is left.
func (l *keyLimiter[K]) spend(key K) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.stateLocked(key, now); st.bucket != nil {
		st.bucket.AllowN(now, 1)
	}
}

// stateLocked returns the state of key, made when there is none (after a
// sweep when one is due). l.mu must be held.
func (l *keyLimiter[K]) stateLocked(key K, now time.Time) *originState {
	if len(l.origins) >= l.nextSweep || now.Sub(l.lastSweep) >= l.sweepEvery {
		l.sweepLocked(now)
	}
	st := l.origins[key]
	if st == nil {
		st = &originState{}
		if l.limit > 0 {
			st.bucket = rate.NewLimiter(l.limit, l.burst)
		}
		l.origins[key] = st
	}
	return st
}

// rateRefusal is the refusal of an empty bucket: Retry-After is the time
// until one token is back.
func (l *keyLimiter[K]) rateRefusal(st *originState, now time.Time) limitRefusal {
	missing := 1 - st.bucket.TokensAt(now)
	return limitRefusal{reason: refusedRate, retryAfter: time.Duration(missing / float64(l.limit) * float64(time.Second))}
}

// refusedLocked counts the refusal r of st and marks it to be logged as a
// warning when the last warning is old enough. l.mu must be held.
func (l *keyLimiter[K]) refusedLocked(st *originState, r limitRefusal, now time.Time) limitRefusal {
	st.refused++
	if st.warnedAt.IsZero() || now.Sub(st.warnedAt) >= warnEvery {
		r.warn, r.refused = true, st.refused
		st.warnedAt, st.refused = now, 0
	}
	return r
}

// release gives back the slot of a successful acquire.
func (l *keyLimiter[K]) release(origin K) {
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
func (l *keyLimiter[K]) sweepLocked(now time.Time) {
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
func (l *keyLimiter[K]) len() int {
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
