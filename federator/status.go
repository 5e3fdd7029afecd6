package federator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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
// Deciding, per worker, in the remote's record (remotes.outcome): a
// request or a notification delivery that reached discovery or the
// network and failed with federation-connection-refused,
// federation-tls-error, discovery-failure or federation-timeout (without
// the remote's own error inside) is a failure; FED_REMOTE_DOWN_AFTER
// failures in a row (default 3) make the worker judge the remote down.
// Any answer of the remote (success, or an error the remote sent) makes
// it judge the remote up. Only exchanges that started after the last
// change count: a failure of a request started before the remote was
// last seen up (stuck in a timeout while the remote came back), or an
// answer to one started before it was judged down (on a connection the
// remote was closing), says nothing about the remote now.
//
// Once per change, across workers: the state of each remote lives in the
// JetStream key-value bucket FED_STATUS_BUCKET (key: the domain; value:
// {"state", "since", "reason", "label"}), created by the federator when
// missing with FED_JETSTREAM_REPLICAS replicas. A worker whose record
// turns down while the bucket says up, or that gets a fresh answer while
// the bucket says down, writes the new state with a compare-and-set on
// the key's revision (Create for a remote never seen down, Update with
// the revision it read): only the worker whose write lands publishes the
// event and logs the change (one WARN line); the others find the state
// already changed and do nothing. Every worker watches the bucket, so
// each knows the current state (and fedbus_remote_up) without asking, and
// a record judged down before another worker saw the remote up is up
// again (remotes.sawUp). Without the bucket (FED_STATUS_BUCKET empty, or
// JetStream unavailable), no event is published and each worker logs its
// own changes.

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
	Label  string    `json:"label,omitempty"` // in the bucket only: the label of the failure that made it down
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

// The WARN lines of a change of a remote's reachability.
const (
	logRemoteDown = "remote unreachable: its requests fail until one reaches it again"
	logRemoteUp   = "remote reachable again"
)

// statusTracker shares the changes of the remotes' reachability that the
// records of one worker judge with the other workers (the status bucket)
// and the components (the events).
type statusTracker struct {
	nc       *nats.Conn
	subjects contract.Subjects
	source   string
	remotes  *remotes
	log      *slog.Logger
	metrics  *metrics.Metrics
	now      func() time.Time

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	kv      jetstream.KeyValue     // nil: events off (no bucket, no JetStream)
	global  map[string]RemoteState // from the bucket
	pending map[string]bool        // a transition is being written
}

func newStatusTracker(nc *nats.Conn, subjects contract.Subjects, source string, rs *remotes, log *slog.Logger, m *metrics.Metrics, now func() time.Time) *statusTracker {
	return &statusTracker{nc: nc, subjects: subjects, source: source, remotes: rs, log: log, metrics: m, now: now,
		global: map[string]RemoteState{}, pending: map[string]bool{}}
}

// start opens (or creates, with replicas replicas) the bucket and
// watches it. Without JetStream the records still judge the remotes, and
// nothing is published (logged).
func (st *statusTracker) start(ctx context.Context, bucket string, replicas int) {
	if bucket == "" {
		return
	}
	var kv jetstream.KeyValue
	js, err := jetstream.New(st.nc)
	if err == nil {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		kv, err = js.KeyValue(octx, bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(octx, jetstream.KeyValueConfig{Bucket: bucket, Description: "fedbus remote status (FED_STATUS_BUCKET)",
				History: 1, Replicas: max(replicas, 1)})
		}
		cancel()
	}
	if err != nil {
		st.log.Error("remote status events off: the status bucket cannot be opened (JetStream needed); each worker logs its own changes", "bucket", bucket, "err", err)
		return
	}
	st.mu.Lock()
	st.kv = kv
	st.mu.Unlock()
	wctx, cancel := context.WithCancel(context.Background())
	st.cancel = cancel
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		st.watch(wctx, kv)
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
func (st *statusTracker) watch(ctx context.Context, kv jetstream.KeyValue) {
	for ctx.Err() == nil {
		w, err := kv.WatchAll(ctx)
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
	if s.State != StateDown {
		st.remotes.sawUp(s.Domain, s.Since)
	}
}

// observe takes the decision that an observation of domain's record
// calls for (the exchange started at start, ended with err; id names it
// in the logs): with the bucket, a transition of the shared state; without
// it, this worker's change is logged.
func (st *statusTracker) observe(o observation, domain string, start time.Time, id string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.kv == nil {
		if o.changed {
			st.metrics.RemoteUp(domain, !o.ch.down)
			st.logChange(o.ch, id, "")
		}
		return
	}
	if !o.fresh {
		return
	}
	g, known := st.global[domain]
	down := known && g.State == StateDown
	switch {
	case o.failed && o.down && !down:
		// The record judged the remote down: by this failure (a change),
		// or earlier while the write of that change failed; a judgement
		// older than the bucket's last change is not written (the bucket's
		// up clears it, remotes.sawUp).
		if known && (start.Before(g.Since) || o.since.Before(g.Since)) {
			return // started, or judged, before the remote was last seen up
		}
		st.transitionLocked(RemoteState{Domain: domain, State: StateDown, Label: o.reason,
			Reason: o.reason + ": " + contract.Truncate(o.err, 300)}, id, o.err)
	case o.reached && down && !start.Before(g.Since):
		st.transitionLocked(RemoteState{Domain: domain, State: StateUp, Reason: domain + " answers again"}, id, "")
	}
}

// logChange writes the WARN line of a change of ch.domain's reachability
// (event: the type of the event published for it, if any).
func (st *statusTracker) logChange(ch change, id, event string) {
	attrs := []any{"remote", ch.domain}
	if ch.down {
		attrs = append(attrs, "reason", ch.reason, "err", ch.err, "since", ch.since.UTC().Format(time.RFC3339))
	} else {
		attrs = append(attrs, "down_since", ch.since.UTC().Format(time.RFC3339),
			"down_for", st.now().Sub(ch.since).Round(time.Millisecond).String(), "reason_was", ch.reason)
	}
	if event != "" {
		attrs = append(attrs, "event", event)
	}
	attrs = append(attrs, "request_id", id)
	if ch.down {
		st.log.Warn(logRemoteDown, attrs...)
		return
	}
	st.log.Warn(logRemoteUp, attrs...)
}

// transitionLocked writes the change in the background (one at a time per
// domain). st.mu must be held, and st.kv set.
func (st *statusTracker) transitionLocked(s RemoteState, id, errMsg string) {
	if st.pending[s.Domain] {
		return
	}
	st.pending[s.Domain] = true
	s.Since = st.now().UTC()
	kv := st.kv
	st.wg.Add(1)
	go func() {
		defer st.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := st.write(ctx, kv, s, id, errMsg); err != nil {
			st.log.Warn("remote status not recorded", "remote", s.Domain, "state", s.State, "reason", s.Reason, "request_id", id, "err", err)
		}
		st.mu.Lock()
		delete(st.pending, s.Domain)
		st.mu.Unlock()
	}()
}

// write sets the remote's state in the bucket with a compare-and-set and,
// when this worker's write made the change, publishes the event and logs
// the change.
func (st *statusTracker) write(ctx context.Context, kv jetstream.KeyValue, s RemoteState, id, errMsg string) error {
	key := s.Domain
	for range 5 {
		var rev uint64
		cur := RemoteState{State: StateUp}
		e, err := kv.Get(ctx, key)
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
			rev, err = kv.Create(ctx, key, val)
		} else {
			rev, err = kv.Update(ctx, key, val, rev)
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
		typ, perr := st.publish(s, rev)
		ch := change{domain: s.Domain, down: true, since: s.Since, reason: s.Label, err: errMsg}
		if s.State != StateDown {
			ch = change{domain: s.Domain, since: cur.Since, reason: cur.Label}
		}
		st.logChange(ch, id, typ)
		return perr
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
// that recorded it, which makes the event's id unique) and returns its
// type ("" when it was not sent).
func (st *statusTracker) publish(s RemoteState, rev uint64) (string, error) {
	subject, err := st.subjects.Status(s.Domain)
	if err != nil {
		return "", err
	}
	typ := contract.TypeRemoteUp
	if s.State == StateDown {
		typ = contract.TypeRemoteDown
	}
	body, err := json.Marshal(RemoteState{Domain: s.Domain, Since: s.Since, Reason: s.Reason})
	if err != nil {
		return "", err
	}
	ev := bus.Event{ID: fmt.Sprintf("%s/%s/%d", s.Domain, s.State, rev), Source: st.source, Type: typ, DataContentType: contract.ContentTypeJSON, Data: body}
	if err := st.nc.PublishMsg(ev.Message(subject)); err != nil {
		return "", fmt.Errorf("publish %s: %w", subject, err)
	}
	st.metrics.StatusEvent(typ)
	return typ, nil
}
