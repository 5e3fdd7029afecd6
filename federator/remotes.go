package federator

import (
	"container/heap"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedbus/fedbus/contract"
)

// maxRecords bounds the records of the registry: the remotes one worker
// remembers. A record that must stay (pinned: requests in flight, a 429
// wait, judged down, a notification delivery) is never evicted; the others
// go least recently used first once maxRecords are kept. Only pinned
// records can take the registry past the bound, and each kind is bounded
// on its own: requests in flight by FED_MAX_IN_FLIGHT, deliveries by the
// destinations with a backlog (their notifications are stored), waits and
// down judgements by maxRecords each.
const maxRecords = 10000

// remote is this worker's record of one remote domain: everything it
// knows of it, in one place. The registry (remotes) guards the fields,
// except dest's, which the notifier guards.
type remote struct {
	domain string
	used   time.Time // last use: evicted and listed by it
	// prev, next: its neighbours in remotes.idle while listed (it may be
	// evicted); not listed while pinned.
	prev, next *remote
	listed     bool

	// inFlight counts the requests to the remote now in flight
	// (FED_MAX_IN_FLIGHT_PER_REMOTE).
	inFlight int
	// until: after a 429, requests to the remote fail here at once until
	// its Retry-After ends (zero: no wait).
	until time.Time
	index int // in remotes.waits, -1 when not waiting

	// Reachability, as this worker's requests and deliveries show it
	// (remotes.outcome): down since changed, for reason (a label).
	down     bool
	changed  time.Time // last change of the judgement; outcomes of exchanges started before say nothing
	reason   string
	failures int // unreachable failures in a row

	// The last outcomes (fedctl remotes status).
	lastSuccess, lastFailure time.Time
	lastLabel, lastError     string

	// batch is what the remote said about batches of notifications (zero
	// until: it takes none).
	batch batchCap
	// dest is its notification delivery state (nil: none), guarded by the
	// notifier's mutex; delivering pins the record while the notifier
	// holds dest (scheduled, being delivered, or failing).
	dest       *dest
	delivering bool
}

func (r *remote) dueAt() time.Time { return r.until }
func (r *remote) setIndex(i int)   { r.index = i }

// pinned reports whether r must stay in the registry.
func (r *remote) pinned() bool { return r.inFlight > 0 || r.index >= 0 || r.down || r.delivering }

// change is a change of a remote's reachability, as one worker's
// requests and deliveries show it: it became unreachable (down) or
// reachable again.
type change struct {
	domain string
	down   bool
	since  time.Time // when it became unreachable
	reason string    // the label of the failure that made it so
	err    string    // the message of the exchange that changed it
}

// reachability classifies the outcome of an exchange that reached
// discovery or the network: reached (the remote answered, even with an
// error), failed (it could not be reached), or neither (the outcome says
// nothing of the remote: a refusal, no SRV record, a private target).
func reachability(err error) (reached, failed bool) {
	if err == nil {
		return true, false
	}
	e := contract.AsError(err)
	switch e.Label {
	case contract.LabelRemoteError:
		return true, false
	case contract.LabelTimeout:
		// A remote that timed out itself answered: its body is Inner.
		return e.Inner != nil, e.Inner == nil
	case contract.LabelConnectionRefused, contract.LabelTLSError, contract.LabelDiscoveryFailure:
		return false, true
	}
	return false, false
}

// observation is what remotes.outcome made of one outcome.
type observation struct {
	fresh           bool // the exchange started after the last change of the judgement
	reached, failed bool // reachability(err)
	changed         bool // the judgement changed: ch says how
	ch              change
	// down: the record is judged down after the outcome, since since, for
	// reason; err is the outcome's message (a failure). A worker whose
	// write of a change to the status bucket failed writes it again at
	// the next failure (status.go).
	down   bool
	since  time.Time
	reason string
	err    string
}

// outcome records the outcome of an exchange with r (a request or a
// delivery, started at start) that reached discovery or the network, and
// judges the remote: FED_REMOTE_DOWN_AFTER unreachable failures in a row
// make it down, any answer makes it up. An exchange started before the
// last change of the judgement says nothing of the remote now (a request
// stuck in a timeout while the remote came back, or one answered on a
// connection it was closing). r must be pinned (acquired, or its delivery
// running).
func (rs *remotes) outcome(r *remote, start time.Time, err error) observation {
	var o observation
	o.reached, o.failed = reachability(err)
	now := rs.now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	defer rs.settleLocked(r, now)
	if err == nil {
		r.lastSuccess = now
	} else {
		e := contract.AsError(err)
		r.lastFailure, r.lastLabel, r.lastError = now, e.Label, contract.Truncate(e.Message, 300)
	}
	if start.Before(r.changed) {
		return o
	}
	o.fresh = true
	switch {
	case o.reached:
		r.failures = 0
		if r.down {
			o.changed, o.ch = true, change{domain: r.domain, since: r.changed, reason: r.reason}
			r.down, r.changed = false, now
			rs.downs--
		}
	case o.failed:
		r.failures++
		if !r.down && r.failures >= rs.downAfter && rs.downs < rs.max {
			e := contract.AsError(err)
			r.down, r.changed, r.reason, r.failures = true, now, e.Label, 0
			rs.downs++
			o.changed, o.ch = true, change{domain: r.domain, down: true, since: now, reason: e.Label, err: e.Message}
		}
		o.err = contract.AsError(err).Message
	}
	o.down, o.since, o.reason = r.down, r.changed, r.reason
	return o
}

// sawUp records that the remote was seen up since since by another worker
// (the status bucket): a record judged down before that is up again, and
// its count of failures starts afresh.
func (rs *remotes) sawUp(domain string, since time.Time) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.byDomain[domain]
	if r == nil || !r.down || !r.changed.Before(since) {
		return
	}
	r.down, r.changed, r.failures = false, since, 0
	rs.downs--
	rs.settleLocked(r, r.used)
}

// remotes is the registry of one worker's records, one per remote domain,
// bounded by max (see maxRecords). Safe for concurrent use. Lock order:
// the notifier's mutex before mu, and mu before nothing else.
type remotes struct {
	maxPerRemote atomic.Int64 // 0: no limit
	max          int          // records kept (besides pinned ones), waits, down judgements
	downAfter    int          // FED_REMOTE_DOWN_AFTER
	now          func() time.Time

	mu       sync.Mutex
	byDomain map[string]*remote
	idle     idleList          // the records that may be evicted, most recently used first
	waits    timeHeap[*remote] // records with a wait, the earliest end first
	downs    int               // records judged down
}

func newRemotes(maxPerRemote, downAfter, bound int, now func() time.Time) *remotes {
	rs := &remotes{max: bound, downAfter: max(downAfter, 1), now: now, byDomain: make(map[string]*remote)}
	rs.maxPerRemote.Store(int64(maxPerRemote))
	return rs
}

// getLocked returns the record of domain, made when there is none (the
// least recently used records that may go are evicted to make room).
// The caller pins it or settles it. rs.mu must be held.
func (rs *remotes) getLocked(domain string) *remote {
	r := rs.byDomain[domain]
	if r == nil {
		rs.trimLocked(rs.max-1, nil)
		r = &remote{domain: domain, index: -1}
		rs.byDomain[domain] = r
	}
	return r
}

// settleLocked records a use of r at now and files it: out of the idle
// list while pinned, at its front otherwise (then the registry is trimmed
// to its bound, r kept). rs.mu must be held.
func (rs *remotes) settleLocked(r *remote, now time.Time) {
	if rs.byDomain[r.domain] != r {
		return // evicted while the notifier let it go
	}
	r.used = now
	switch {
	case r.pinned():
		if r.listed {
			rs.idle.remove(r)
		}
	case !r.listed:
		rs.idle.pushFront(r)
		rs.trimLocked(rs.max, r)
	default:
		rs.idle.moveToFront(r)
	}
}

// trimLocked evicts the least recently used records that may go until at
// most n records are kept (or none may go), keeping keep. rs.mu must be
// held.
func (rs *remotes) trimLocked(n int, keep *remote) {
	for len(rs.byDomain) > n {
		r := rs.idle.back
		if r == nil || r == keep {
			return
		}
		rs.idle.remove(r)
		delete(rs.byDomain, r.domain)
	}
}

// idleList is a doubly-linked list of records through their own prev and
// next fields: a record moves in and out of it on every request, without
// an allocation (container/list allocates an element per insertion).
type idleList struct {
	front, back *remote
	n           int
}

// Len returns the number of records listed.
func (l *idleList) Len() int { return l.n }

func (l *idleList) pushFront(r *remote) {
	r.prev, r.next, r.listed = nil, l.front, true
	if l.front != nil {
		l.front.prev = r
	} else {
		l.back = r
	}
	l.front = r
	l.n++
}

func (l *idleList) remove(r *remote) {
	if r.prev != nil {
		r.prev.next = r.next
	} else {
		l.front = r.next
	}
	if r.next != nil {
		r.next.prev = r.prev
	} else {
		l.back = r.prev
	}
	r.prev, r.next, r.listed = nil, nil, false
	l.n--
}

func (l *idleList) moveToFront(r *remote) {
	if l.front != r {
		l.remove(r)
		l.pushFront(r)
	}
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
	rs.settleLocked(r, now)
	return r, nil
}

// release gives back the slot of a successful acquire.
func (rs *remotes) release(r *remote) {
	now := rs.now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r.inFlight--
	rs.settleLocked(r, now)
}

// wait makes requests to domain fail at once until until (a later wait
// extends the current one, an earlier one changes nothing). When max
// remotes wait already, the one whose wait ends first is forgotten.
func (rs *remotes) wait(domain string, until time.Time) {
	now := rs.now()
	if !until.After(now) || rs.max <= 0 {
		return
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.expireLocked(now)
	if r := rs.byDomain[domain]; r != nil && r.index >= 0 {
		if until.After(r.until) {
			r.until = until
			heap.Fix(&rs.waits, r.index)
		}
		rs.settleLocked(r, now)
		return
	}
	if len(rs.waits) >= rs.max {
		rs.endWaitLocked(rs.waits[0])
	}
	r := rs.getLocked(domain)
	r.until = until
	heap.Push(&rs.waits, r)
	rs.settleLocked(r, now)
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
	rs.settleLocked(r, r.used)
}

// counts returns the records kept, those pinned, those waiting and those
// judged down.
func (rs *remotes) counts() (records, pinned, waiting, down int) {
	now := rs.now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.expireLocked(now)
	return len(rs.byDomain), len(rs.byDomain) - rs.idle.Len(), len(rs.waits), rs.downs
}

// records returns the records of the remotes this worker exchanged with,
// most recently used first, at most limit.
func (rs *remotes) records(limit int) []RemoteRecord {
	rs.mu.Lock()
	rl := make([]*remote, 0, len(rs.byDomain))
	for _, r := range rs.byDomain {
		if r.inFlight > 0 || !r.lastSuccess.IsZero() || !r.lastFailure.IsZero() {
			rl = append(rl, r)
		}
	}
	slices.SortFunc(rl, func(a, b *remote) int { return b.used.Compare(a.used) })
	rl = rl[:min(len(rl), limit)]
	out := make([]RemoteRecord, len(rl))
	for i, r := range rl {
		out[i] = RemoteRecord{Domain: r.domain, LastSuccess: r.lastSuccess, LastFailure: r.lastFailure,
			LastLabel: r.lastLabel, LastError: r.lastError, InFlight: r.inFlight}
	}
	rs.mu.Unlock()
	return out
}

// batchCap is what a remote said about batches (HTTPBatchMax*), valid
// until until.
type batchCap struct {
	entries int
	bytes   int64
	until   time.Time
}

// capTTL is how long what a remote said about batches is believed.
const capTTL = time.Hour

// setBatch remembers, for capTTL, what domain said about batches: at
// most entries notifications and bytes of them in one (entries 0: it
// takes none).
func (rs *remotes) setBatch(domain string, entries int, bytes int64) {
	now := rs.now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.getLocked(domain)
	r.batch = batchCap{}
	if entries > 0 {
		r.batch = batchCap{entries: entries, bytes: bytes, until: now.Add(capTTL)}
	}
	rs.settleLocked(r, now)
}

// batch returns what domain accepts in one batch, if it accepts batches.
func (rs *remotes) batch(domain string) (batchCap, bool) {
	now := rs.now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.byDomain[domain]
	if r == nil || !now.Before(r.batch.until) {
		return batchCap{}, false
	}
	return r.batch, true
}

// dest returns the delivery state of domain, made when missing, and pins
// its record: the notifier holds it until it lets it go (setDelivering).
// The notifier's mutex must be held.
func (rs *remotes) dest(domain string) *dest {
	now := rs.now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r := rs.getLocked(domain)
	if r.dest == nil {
		r.dest = &dest{rec: r, domain: domain, index: -1}
	}
	r.delivering = true
	rs.settleLocked(r, now)
	return r.dest
}

// findDest returns the delivery state of domain, nil when there is none.
// The notifier's mutex must be held; what it finds it may read, and pins
// again through dest only.
func (rs *remotes) findDest(domain string) *dest {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r := rs.byDomain[domain]; r != nil {
		return r.dest
	}
	return nil
}

// setDelivering pins r while the notifier holds its delivery state, and
// lets it go when not. The notifier's mutex must be held.
func (rs *remotes) setDelivering(r *remote, on bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if r.delivering != on {
		r.delivering = on
		rs.settleLocked(r, r.used)
	}
}
