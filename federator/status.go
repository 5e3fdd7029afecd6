package federator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/metrics"
)

// Remote status (contract section 7): when this backend's own traffic
// shows that a remote became unreachable, or reachable again, one
// CloudEvent fedbus.remote.down / fedbus.remote.up is published on
// fed.status.<domain>, once per change however many workers saw it.
//
// Deciding, per worker: a request that reached the network and failed
// with federation-connection-refused, federation-tls-error,
// discovery-failure or federation-timeout is a failure; FED_REMOTE_DOWN_AFTER
// failures in a row (default 3) make the worker judge the remote down.
// Any answer of the remote (success, or an error the remote sent,
// federation-remote-error) is a success and makes it judge the remote up.
// Only requests that started after the last change count: a failure of a
// request started before the remote was last seen up (stuck in a timeout
// while the remote came back), or a success of one started before it was
// judged down (finishing on a connection the remote was closing), says
// nothing about the remote now.
//
// Once per change, across workers: the state of each remote lives in the
// JetStream key-value bucket FED_STATUS_BUCKET (key: the domain; value:
// {"state", "since", "reason"}), created by the federator when missing.
// A worker that judges a change writes the new state with a
// compare-and-set on the key's revision (Create for a remote never seen
// down, Update with the revision it read): only the worker whose write
// lands publishes the event; the others find the state already changed
// and publish nothing. Every worker watches the bucket, so each knows the
// current state (and fedbus_remote_up) without asking.

// maxTracked bounds the remotes a worker keeps a record of (last
// success, last failure); the oldest are forgotten first.
const maxTracked = 10000

// maxStatsRemotes bounds the remotes shown in the micro service stats.
const maxStatsRemotes = 500

// Remote states.
const (
	StateUp   = "up"
	StateDown = "down"
)

// RemoteState is the value of a remote's key in the status bucket, and the
// body of a remote status event.
type RemoteState struct {
	Domain string    `json:"domain"`
	State  string    `json:"state,omitempty"` // in the bucket only
	Since  time.Time `json:"since"`
	Reason string    `json:"reason"`
}

// RemoteRecord is what one worker knows of one remote (fedctl remotes
// status shows the records of every worker).
type RemoteRecord struct {
	Domain      string    `json:"domain"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastFailure time.Time `json:"last_failure,omitzero"`
	LastLabel   string    `json:"last_label,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	InFlight    int       `json:"in_flight"`
}

type remoteHealth struct {
	RemoteRecord
	failures int // unreachable failures in a row
	used     time.Time
}

// statusTracker decides and publishes the remote status events of one
// worker.
type statusTracker struct {
	nc        *nats.Conn
	subjects  contract.Subjects
	source    string
	log       *slog.Logger
	metrics   *metrics.Metrics
	threshold int
	now       func() time.Time

	kv     jetstream.KeyValue // nil: events off (no JetStream)
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	byDomain map[string]*remoteHealth
	global   map[string]RemoteState // from the bucket
	pending  map[string]bool        // a transition is being written
}

func newStatusTracker(nc *nats.Conn, subjects contract.Subjects, source string, threshold int, log *slog.Logger, m *metrics.Metrics, now func() time.Time) *statusTracker {
	return &statusTracker{nc: nc, subjects: subjects, source: source, threshold: threshold, log: log, metrics: m, now: now,
		byDomain: map[string]*remoteHealth{}, global: map[string]RemoteState{}, pending: map[string]bool{}}
}

// start opens (or creates) the bucket and watches it. Without JetStream
// the tracker still keeps its records, and publishes nothing (logged).
func (st *statusTracker) start(ctx context.Context, bucket string) {
	if bucket == "" {
		return
	}
	js, err := jetstream.New(st.nc)
	if err == nil {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st.kv, err = js.KeyValue(octx, bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			st.kv, err = js.CreateKeyValue(octx, jetstream.KeyValueConfig{Bucket: bucket, Description: "fedbus remote status (FED_STATUS_BUCKET)", History: 1})
		}
		cancel()
	}
	if err != nil {
		st.kv = nil
		st.log.Error("remote status events off: the status bucket cannot be opened (JetStream needed)", "bucket", bucket, "err", err)
		return
	}
	wctx, cancel := context.WithCancel(context.Background())
	st.cancel = cancel
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		st.watch(wctx)
	}()
}

// stop ends the watch and waits for the transitions being written.
func (st *statusTracker) stop() {
	if st.cancel != nil {
		st.cancel()
	}
	st.wg.Wait()
}

// watch keeps st.global up to date until ctx ends.
func (st *statusTracker) watch(ctx context.Context) {
	for ctx.Err() == nil {
		w, err := st.kv.WatchAll(ctx)
		if err == nil {
			for e := range w.Updates() {
				if e == nil {
					continue
				}
				st.apply(e)
			}
			_ = w.Stop()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// apply records one entry of the bucket.
func (st *statusTracker) apply(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		st.mu.Lock()
		delete(st.global, e.Key())
		st.mu.Unlock()
		return
	}
	var s RemoteState
	if err := json.Unmarshal(e.Value(), &s); err != nil || s.Domain == "" {
		return
	}
	st.mu.Lock()
	st.global[s.Domain] = s
	st.mu.Unlock()
	st.metrics.RemoteUp(s.Domain, s.State != StateDown)
}

// unreachable reports whether a request's error says that the remote could
// not be reached.
func unreachable(label string) bool {
	switch label {
	case contract.LabelConnectionRefused, contract.LabelTLSError, contract.LabelDiscoveryFailure, contract.LabelTimeout:
		return true
	}
	return false
}

// observe records the outcome of a request to domain that started at
// start and reached discovery or the network.
func (st *statusTracker) observe(domain string, start time.Time, err error) {
	now := st.now()
	var e *contract.Error
	if err != nil {
		e = contract.AsError(err)
		if !unreachable(e.Label) && e.Label != contract.LabelRemoteError {
			// Not about reachability (a refusal, a remote's 429, no SRV
			// record): only remembered.
			st.mu.Lock()
			h := st.recordLocked(domain, now)
			h.LastFailure, h.LastLabel, h.LastError = now, e.Label, contract.Truncate(e.Message, 300)
			st.mu.Unlock()
			return
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	h := st.recordLocked(domain, now)
	g, known := st.global[domain]
	down := known && g.State == StateDown
	if e == nil || e.Label == contract.LabelRemoteError {
		if e == nil {
			h.LastSuccess = now
		} else {
			h.LastFailure, h.LastLabel, h.LastError = now, e.Label, contract.Truncate(e.Message, 300)
		}
		h.failures = 0
		// A request that started before the remote was judged down (one
		// in flight on a connection the remote was closing) says nothing
		// about it now.
		if down && !start.Before(g.Since) {
			st.transitionLocked(domain, StateUp, "requests to "+domain+" are answered again")
		}
		return
	}
	h.LastFailure, h.LastLabel, h.LastError = now, e.Label, contract.Truncate(e.Message, 300)
	if known && g.State == StateUp && start.Before(g.Since) {
		return // started before the remote was last seen up
	}
	h.failures++
	if h.failures >= st.threshold && !down {
		st.transitionLocked(domain, StateDown, e.Label+": "+contract.Truncate(e.Message, 300))
	}
}

// recordLocked returns the record of domain, made when missing (the
// oldest record forgotten when maxTracked are kept). st.mu must be held.
func (st *statusTracker) recordLocked(domain string, now time.Time) *remoteHealth {
	h := st.byDomain[domain]
	if h == nil {
		if len(st.byDomain) >= maxTracked {
			var oldest string
			var t time.Time
			for d, r := range st.byDomain {
				if oldest == "" || r.used.Before(t) {
					oldest, t = d, r.used
				}
			}
			delete(st.byDomain, oldest)
		}
		h = &remoteHealth{RemoteRecord: RemoteRecord{Domain: domain}}
		st.byDomain[domain] = h
	}
	h.used = now
	return h
}

// transitionLocked writes the change in the background (one at a time per
// domain). st.mu must be held.
func (st *statusTracker) transitionLocked(domain, state, reason string) {
	if st.kv == nil || st.pending[domain] {
		return
	}
	st.pending[domain] = true
	since := st.now().UTC()
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := st.write(ctx, RemoteState{Domain: domain, State: state, Since: since, Reason: reason}); err != nil {
			st.log.Warn("remote status not recorded", "remote", domain, "state", state, "err", err)
		}
		st.mu.Lock()
		delete(st.pending, domain)
		st.mu.Unlock()
	}()
}

// write sets the remote's state in the bucket with a compare-and-set and,
// when this worker's write made the change, publishes the event.
func (st *statusTracker) write(ctx context.Context, s RemoteState) error {
	key := s.Domain
	for range 5 {
		var rev uint64
		cur := RemoteState{State: StateUp}
		e, err := st.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("read status of %s: %w", key, err)
		default:
			rev = e.Revision()
			_ = json.Unmarshal(e.Value(), &cur)
		}
		if cur.State == s.State {
			if e != nil {
				st.apply(e) // another worker made the change
			}
			return nil
		}
		val, err := json.Marshal(s)
		if err != nil {
			return err
		}
		if rev == 0 {
			rev, err = st.kv.Create(ctx, key, val)
		} else {
			rev, err = st.kv.Update(ctx, key, val, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
			continue // another worker wrote first: read again
		}
		if err != nil {
			return fmt.Errorf("write status of %s: %w", key, err)
		}
		st.mu.Lock()
		st.global[s.Domain] = s
		st.mu.Unlock()
		st.metrics.RemoteUp(s.Domain, s.State == StateUp)
		return st.publish(s, rev)
	}
	return fmt.Errorf("write status of %s: too many concurrent writers", key)
}

// isWrongSequence reports the error of an Update whose revision is not the
// key's last any more.
func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// publish sends the remote status event of s (rev: the bucket revision
// that recorded it, which makes the event's id unique).
func (st *statusTracker) publish(s RemoteState, rev uint64) error {
	subject, err := st.subjects.Status(s.Domain)
	if err != nil {
		return err
	}
	typ := contract.TypeRemoteUp
	if s.State == StateDown {
		typ = contract.TypeRemoteDown
	}
	body, err := json.Marshal(RemoteState{Domain: s.Domain, Since: s.Since, Reason: s.Reason})
	if err != nil {
		return err
	}
	ev := bus.Event{ID: fmt.Sprintf("%s/%s/%d", s.Domain, s.State, rev), Source: st.source, Type: typ, DataContentType: contract.ContentTypeJSON, Data: body}
	if err := st.nc.PublishMsg(ev.Message(subject)); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	st.metrics.StatusEvent(typ)
	st.log.Warn("remote "+s.State, "remote", s.Domain, "since", s.Since.Format(time.RFC3339), "reason", s.Reason, "event", typ)
	return nil
}

// records returns this worker's records (most recently used first, at
// most maxStatsRemotes), with the requests in flight of remotes.
func (st *statusTracker) records(inFlight func(domain string) int) []RemoteRecord {
	st.mu.Lock()
	hs := make([]*remoteHealth, 0, len(st.byDomain))
	for _, h := range st.byDomain {
		hs = append(hs, h)
	}
	sort.Slice(hs, func(i, j int) bool { return hs[i].used.After(hs[j].used) })
	if len(hs) > maxStatsRemotes {
		hs = hs[:maxStatsRemotes]
	}
	out := make([]RemoteRecord, len(hs))
	for i, h := range hs {
		out[i] = h.RemoteRecord
	}
	st.mu.Unlock()
	for i := range out {
		out[i].InFlight = inFlight(out[i].Domain)
	}
	return out
}
