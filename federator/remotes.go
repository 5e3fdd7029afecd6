package federator

import (
	"container/heap"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedbus/fedbus/contract"
)

// maxWaits bounds the remotes remembered for their Retry-After at once,
// and the remotes remembered as unreachable.
const maxWaits = 10000

// downAfterTimeouts is how many requests in a row must time out before a
// remote counts as unreachable (one slow answer is not an outage); one
// refused connection, failed TLS handshake or failed discovery is enough.
const downAfterTimeouts = 3

// remote is this worker's record of one remote domain: everything it
// tracks per remote, in one place. A record exists while it has something
// to remember (requests in flight, a wait); records are dropped as soon as
// they have not, so memory follows the set of busy or backed-off remotes.
type remote struct {
	domain string
	// inFlight counts the requests to the remote now in flight
	// (FED_MAX_IN_FLIGHT_PER_REMOTE).
	inFlight int
	// until: after a 429, requests to the remote fail here at once until
	// its Retry-After ends (zero: no wait).
	until time.Time
	index int // in remotes.waits, -1 when not waiting
	// down: this worker's requests fail for want of reaching the remote,
	// since downSince, for the reason (a label); kept until a request
	// reaches it again, so that both changes are told once (state).
	down      bool
	downSince time.Time
	reason    string
	// timeouts counts the requests in a row that timed out without an
	// answer (downAfterTimeouts).
	timeouts int
}

func (r *remote) dueAt() time.Time { return r.until }
func (r *remote) setIndex(i int)   { r.index = i }

// idle reports whether r has nothing to remember.
func (r *remote) idle() bool { return r.inFlight == 0 && r.index < 0 && !r.down && r.timeouts == 0 }

// Change is a change of a remote's reachability, as one worker's own
// requests show it: it became unreachable (Down) or reachable again.
type Change struct {
	Domain string
	Down   bool
	Since  time.Time // when it became unreachable
	Reason string    // the label of the failure that made it so
}

// reachability classifies the outcome of a request that was sent towards
// the remote (after discovery started): reached (it answered, even with an
// error), failed (it could not be reached), or neither (the outcome says
// nothing of the remote).
func reachability(err error) (reached, failed, timeout bool) {
	if err == nil {
		return true, false, false
	}
	e := contract.AsError(err)
	switch e.Label {
	case contract.LabelRemoteError:
		return true, false, false
	case contract.LabelTimeout:
		// A remote that timed out itself answered: its body is Inner.
		return e.Inner != nil, false, e.Inner == nil
	case contract.LabelConnectionRefused, contract.LabelTLSError, contract.LabelDiscoveryFailure:
		return false, true, false
	}
	return false, false, false
}

// outcome records the outcome of a request to r (acquired) and returns
// the change of its reachability, if any.
func (rs *remotes) outcome(r *remote, err error) (Change, bool) {
	reached, failed, timeout := reachability(err)
	now := rs.now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	switch {
	case reached:
		rs.resetTimeoutsLocked(r)
		if r.down {
			r.down = false
			rs.downs--
			return Change{Domain: r.domain, Since: r.downSince, Reason: r.reason}, true
		}
	case timeout && !r.down:
		if r.timeouts == 0 {
			if rs.counting >= rs.maxWaits {
				break // too many remotes timing out at once to count them all
			}
			rs.counting++
		}
		r.timeouts++
		if r.timeouts >= downAfterTimeouts {
			return rs.markDownLocked(r, contract.AsError(err).Label, now)
		}
	case failed && !r.down:
		return rs.markDownLocked(r, contract.AsError(err).Label, now)
	}
	return Change{}, false
}

// resetTimeoutsLocked ends the count of r's timeouts in a row. rs.mu must
// be held.
func (rs *remotes) resetTimeoutsLocked(r *remote) {
	if r.timeouts > 0 {
		r.timeouts = 0
		rs.counting--
	}
}

// markDownLocked records r as unreachable (at most maxWaits remotes are
// remembered so). rs.mu must be held.
func (rs *remotes) markDownLocked(r *remote, reason string, now time.Time) (Change, bool) {
	rs.resetTimeoutsLocked(r)
	if rs.downs >= rs.maxWaits {
		return Change{}, false
	}
	r.down, r.downSince, r.reason = true, now, reason
	rs.downs++
	return Change{Domain: r.domain, Down: true, Since: now, Reason: reason}, true
}

// remotes holds the records of the remote domains. Safe for concurrent use.
type remotes struct {
	maxPerRemote atomic.Int64 // 0: no limit
	maxWaits     int
	now          func() time.Time

	mu       sync.Mutex
	byDomain map[string]*remote
	waits    timeHeap[*remote] // records with a wait, the earliest end first
	downs    int               // records that are down
	counting int               // records counting timeouts in a row
}

func newRemotes(maxPerRemote, maxWaits int, now func() time.Time) *remotes {
	rs := &remotes{maxWaits: maxWaits, now: now, byDomain: make(map[string]*remote)}
	rs.maxPerRemote.Store(int64(maxPerRemote))
	return rs
}

// acquire takes a slot for one request to domain and returns its record,
// which the caller gives back with release. It refuses, with
// too-many-requests, a domain that asked us to wait (429) or that has
// FED_MAX_IN_FLIGHT_PER_REMOTE requests in flight.
func (rs *remotes) acquire(domain string) (*remote, *contract.Error) {
	now := rs.now()
	max := int(rs.maxPerRemote.Load())
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.expireLocked(now)
	r := rs.getLocked(domain)
	switch {
	case r.index >= 0:
		// The remote's own limit, reported by its 429: nothing is sent
		// (not even a DNS query) until its Retry-After ends.
		return nil, contract.Errorf(contract.LabelTooManyRequests, "%s asked us to wait (429 with Retry-After): requests to it are not sent until %s",
			domain, r.until.UTC().Format(backoffTimeFormat))
	case max > 0 && r.inFlight >= max:
		return nil, contract.Errorf(contract.LabelTooManyRequests, "%d requests to %s are in flight already (FED_MAX_IN_FLIGHT_PER_REMOTE)", max, domain)
	}
	r.inFlight++
	return r, nil
}

// release gives back the slot of a successful acquire.
func (rs *remotes) release(r *remote) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r.inFlight--
	rs.dropIfIdleLocked(r)
}

// wait makes requests to domain fail at once until until (a later wait
// extends the current one, an earlier one changes nothing). When maxWaits
// remotes wait already, the one whose wait ends first is forgotten.
func (rs *remotes) wait(domain string, until time.Time) {
	now := rs.now()
	if !until.After(now) || rs.maxWaits <= 0 {
		return
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.expireLocked(now)
	r := rs.getLocked(domain)
	if r.index >= 0 {
		if until.After(r.until) {
			r.until = until
			heap.Fix(&rs.waits, r.index)
		}
		return
	}
	if len(rs.waits) >= rs.maxWaits {
		rs.endWaitLocked(rs.waits[0])
	}
	r.until = until
	heap.Push(&rs.waits, r)
}

// getLocked returns the record of domain, made when there is none.
// rs.mu must be held.
func (rs *remotes) getLocked(domain string) *remote {
	r := rs.byDomain[domain]
	if r == nil {
		r = &remote{domain: domain, index: -1}
		rs.byDomain[domain] = r
	}
	return r
}

// waiting returns until when requests to domain must wait, and whether
// they must.
func (rs *remotes) waiting(domain string) (time.Time, bool) {
	now := rs.now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.expireLocked(now)
	if r := rs.byDomain[domain]; r != nil && r.index >= 0 {
		return r.until, true
	}
	return time.Time{}, false
}

// len returns how many records exist (busy or waiting remotes).
func (rs *remotes) len() int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return len(rs.byDomain)
}

// expireLocked ends the waits that are over. rs.mu must be held.
func (rs *remotes) expireLocked(now time.Time) {
	for len(rs.waits) > 0 && !now.Before(rs.waits[0].until) {
		rs.endWaitLocked(rs.waits[0])
	}
}

// endWaitLocked ends r's wait. rs.mu must be held.
func (rs *remotes) endWaitLocked(r *remote) {
	heap.Remove(&rs.waits, r.index)
	r.until = time.Time{}
	rs.dropIfIdleLocked(r)
}

func (rs *remotes) dropIfIdleLocked(r *remote) {
	if r.idle() && rs.byDomain[r.domain] == r {
		delete(rs.byDomain, r.domain)
	}
}

// inFlightOf returns the requests to domain now in flight.
func (rs *remotes) inFlightOf(domain string) int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r := rs.byDomain[domain]; r != nil {
		return r.inFlight
	}
	return 0
}
