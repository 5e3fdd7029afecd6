package federator

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/notify"
)

// The delivery of notifications (contract section 6; README
// "Notifications" describes it for operators).
//
// Every destination domain with a backlog has, in NATS:
//   - its notifications in the outbound stream (work queue: they leave it
//     when delivered or set aside), on fed.notify.<component>.<rpc>.<domain>;
//   - while some worker delivers it, a lease (a key of the lease bucket,
//     created only when absent, refreshed while held, gone LeaseTTL after
//     its holder was last heard of) and a durable pull consumer filtered on
//     fed.notify.*.*.<domain> (in memory, at most Batch notifications
//     unacknowledged, deleted by the server after consumerIdle without
//     pulls: the stream, not the consumer, is where the backlog lives);
//   - while its delivery fails, a state key (attempts, next attempt, last
//     error), written at each failed attempt.
//
// Every federator process keeps, in memory, the delivery state of each
// destination it knows to have a backlog or a state (from the wake-up
// messages the stream republishes for each stored notification, the
// state bucket it watches, and a periodic scan of the stream's subjects)
// in the remote's record (remotes.go: a dest, which pins the record while
// the destination is scheduled, delivered or failing), and a schedule of
// when each is due. A due destination is delivered by
// one of at most Concurrency goroutines: it takes the lease (of several
// workers, one gets it), fetches a batch from the consumer, sends it (one
// request when the remote accepts batches, else one request per
// notification, in order), acknowledges what was delivered, sets aside
// what was refused, and goes on until the backlog is empty. On a failure
// that may pass, the notifications not delivered are given back to the
// consumer in order (they come first again), the state records the next
// attempt (jittered exponential backoff), and the lease is released: a
// destination that waits costs a record and a state key, no goroutine,
// lease or consumer.

// consumerIdle is the InactiveThreshold of the per-destination consumers.
const consumerIdle = time.Minute

// notifier delivers the notifications of one federator process.
type notifier struct {
	f        *Federator
	cfg      NotifyConfig
	replicas int // of the streams and buckets it creates (FED_JETSTREAM_REPLICAS)
	js       jetstream.JetStream
	id       string // this process's lease holder name
	log      *slog.Logger

	// Set up by setup, before anything else runs.
	stream  jetstream.Stream
	dead    jetstream.Stream
	store   *notify.Store
	created time.Time // the stream's creation time: the epochs of HTTPNotificationEpoch

	// mu guards the dests (found through the registry, f.remotes) and
	// what follows.
	mu     sync.Mutex
	due    timeHeap[*dest]
	active int
	full   int // last logged fill level of the stream (percent step)
	// failing counts the records with a failing state.
	failing atomic.Int64

	kick chan struct{} // wakes the scheduler
	stop chan struct{} // closed by shutdown
	wg   sync.WaitGroup
	subs []*nats.Subscription
}

// dest is this process's delivery state of one destination with a
// backlog or a failing state, in the remote's record (rec); the
// notifier's mutex guards it.
type dest struct {
	rec     *remote
	domain  string
	at      time.Time // when it is due
	index   int       // in notifier.due; -1 when not scheduled
	running bool      // a delivery goroutine of this process has it
	rerun   bool      // woken while running: look again afterwards
	force   bool      // the next attempt ignores the backoff (the remote showed signs of life)
	// heldUntil: another worker held its lease; wake-ups before this are
	// left to that worker.
	heldUntil time.Time
	state     notify.State // last known (zero: delivering)
	warned    time.Time    // last long-outage warning
	// cons: its consumer, kept with the record (made again when the
	// server deleted it, consumerIdle after its last use).
	cons jetstream.Consumer
}

func (d *dest) dueAt() time.Time { return d.at }
func (d *dest) setIndex(i int)   { d.index = i }

func newNotifier(f *Federator, js jetstream.JetStream) *notifier {
	host, _ := os.Hostname()
	return &notifier{
		f: f, cfg: f.cfg.Notify, js: js, replicas: max(f.cfg.JetStreamReplicas, 1),
		id:   host + "/" + strconv.Itoa(os.Getpid()) + "/" + nuid.Next()[:8],
		log:  f.log.With("part", "notify"),
		kick: make(chan struct{}, 1), stop: make(chan struct{}),
	}
}

// start sets up the streams and buckets (retrying in the background until
// it succeeds: requests are served meanwhile) and starts delivering.
func (n *notifier) start(ctx context.Context) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for attempt := 0; ; attempt++ {
			err := n.setup(ctx)
			if err == nil {
				break
			}
			if attempt == 0 || attempt%12 == 0 {
				n.log.Warn("notifications not set up yet, retrying every 5s (requests are served meanwhile)", "err", err)
			}
			select {
			case <-n.stop:
				return
			case <-time.After(5 * time.Second):
			}
		}
		if err := n.subscribe(); err != nil {
			n.log.Error("notifications: subscribe", "err", err)
		}
		n.wg.Add(2)
		go n.watchStates(ctx)
		go n.scanLoop(ctx)
		n.schedule(ctx)
		for _, s := range n.subs {
			_ = s.Unsubscribe()
		}
	}()
}

// setup creates the streams and buckets when missing.
func (n *notifier) setup(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	subjects := n.f.subjects
	stream, created, err := notify.Ensure(ctx, n.js, notify.OutboundConfig(n.cfg.Stream, subjects,
		notify.Limits{MaxBytes: n.cfg.MaxBytes, Duplicates: n.cfg.Duplicates, Replicas: n.replicas}))
	if err != nil {
		return err
	}
	if created {
		n.log.Info("notification stream created", "stream", n.cfg.Stream, "max_bytes", n.cfg.MaxBytes, "duplicate_window", n.cfg.Duplicates.String())
	}
	dead, created, err := notify.Ensure(ctx, n.js, notify.DeadConfig(n.cfg.DeadStream, subjects,
		notify.Limits{MaxBytes: n.cfg.DeadMaxBytes, MaxAge: n.cfg.DeadMaxAge, Duplicates: 2 * time.Minute, Replicas: n.replicas}))
	if err != nil {
		return err
	}
	if created {
		n.log.Info("dead-letter stream created", "stream", n.cfg.DeadStream, "max_age", n.cfg.DeadMaxAge.String(), "max_bytes", n.cfg.DeadMaxBytes)
	}
	names := notify.Names{Stream: n.cfg.Stream, Dead: n.cfg.DeadStream}
	store, err := notify.OpenStore(ctx, n.js, names, n.cfg.LeaseTTL, n.replicas)
	if err != nil {
		return err
	}
	n.stream, n.dead, n.store = stream, dead, store
	n.created = stream.CachedInfo().Created
	return nil
}

// subscribe listens to the wake-up messages of stored notifications and to
// the contact signals of the ingress, in the federators' queue group: one
// worker hears each.
func (n *notifier) subscribe() error {
	nc := n.f.deps.NATS
	wake, err := nc.QueueSubscribe(n.f.subjects.NotifiedAll(), contract.FederatorQueueGroup, func(m *nats.Msg) {
		if r, err := n.f.subjects.ParseNotified(m.Subject); err == nil {
			n.wake(r.Domain, false)
		}
	})
	if err != nil {
		return err
	}
	n.subs = append(n.subs, wake)
	contact, err := nc.QueueSubscribe(n.f.subjects.ContactAll(), contract.FederatorQueueGroup, func(m *nats.Msg) {
		if origin, err := n.f.subjects.ParseContact(m.Subject); err == nil {
			n.reachable(origin)
		}
	})
	if err != nil {
		return err
	}
	n.subs = append(n.subs, contact)
	for _, s := range n.subs {
		_ = s.SetPendingLimits(-1, 64<<20)
	}
	return nc.Flush()
}

// shutdown stops scheduling, unsubscribes and lets the deliveries in
// flight end their current batch (bounded by ctx).
func (n *notifier) shutdown(ctx context.Context) error {
	close(n.stop)
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("notifications: %w", ctx.Err())
	}
}

// stopping reports whether shutdown began.
func (n *notifier) stopping() bool {
	select {
	case <-n.stop:
		return true
	default:
		return false
	}
}

// getLocked returns the delivery state of domain, made when missing, its
// record pinned until settleLocked. n.mu held.
func (n *notifier) getLocked(domain string) *dest {
	return n.f.remotes.dest(domain)
}

// settleLocked lets d's record go when d is neither scheduled, being
// delivered nor failing (the registry may then evict it, least recently
// used first), and pins it otherwise. n.mu held.
func (n *notifier) settleLocked(d *dest) {
	n.f.remotes.setDelivering(d.rec, d.running || d.index >= 0 || d.state.Attempts > 0)
}

// wake schedules domain: a notification was stored for it (or found by the
// scan). A failing destination keeps its backoff unless force.
func (n *notifier) wake(domain string, force bool) {
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.getLocked(domain)
	defer n.settleLocked(d)
	if !force && now.Before(d.heldUntil) {
		return // another worker delivers it
	}
	at := now
	if !force && d.state.Attempts > 0 && d.state.NextAttempt.After(now) {
		at = d.state.NextAttempt
	}
	if force {
		d.force = true
	}
	n.scheduleLocked(d, at)
}

// reachable is called when domain showed signs of life (an inbound request
// of it arrived, or an outbound request to it succeeded): a failing
// destination is retried at once.
func (n *notifier) reachable(domain string) {
	if n.failing.Load() == 0 {
		return // the request path's common case: no lock
	}
	n.mu.Lock()
	d := n.f.remotes.findDest(domain)
	failing := d != nil && d.state.Attempts > 0
	n.mu.Unlock()
	if failing {
		n.log.Info("destination showed signs of life, retrying its notifications now", "remote", domain)
		n.wake(domain, true)
	}
}

// scheduleLocked makes d due at at (or earlier, if it is due earlier
// already). n.mu held.
func (n *notifier) scheduleLocked(d *dest, at time.Time) {
	if d.running {
		if !at.After(time.Now()) {
			d.rerun = true
		}
		return
	}
	if d.index >= 0 {
		if at.Before(d.at) {
			d.at = at
			heap.Fix(&n.due, d.index)
			n.kickLocked()
		}
		return
	}
	d.at = at
	heap.Push(&n.due, d)
	n.kickLocked()
}

func (n *notifier) kickLocked() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// schedule runs the due destinations, at most Concurrency at once.
func (n *notifier) schedule(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		n.mu.Lock()
		now := time.Now()
		next := time.Hour
		for len(n.due) > 0 {
			d := n.due[0]
			if d.at.After(now) {
				next = d.at.Sub(now)
				break
			}
			if n.active >= n.cfg.Concurrency {
				break // the next to end kicks
			}
			heap.Pop(&n.due)
			d.running = true
			n.active++
			n.wg.Add(1)
			go n.deliver(ctx, d)
		}
		n.mu.Unlock()
		timer.Reset(next)
		select {
		case <-n.stop:
			return
		case <-n.kick:
		case <-timer.C:
		}
	}
}

// outcome is how a delivery session ended.
type outcome int

const (
	drained outcome = iota // nothing left (or the rest is another's)
	failed                 // a failure that may pass: the next attempt is in the state
	held                   // another worker holds the lease
	trouble                // NATS trouble (not the remote's): again soon
	stopped                // shutting down
)

// deliver runs one delivery session of d and reschedules it.
func (n *notifier) deliver(ctx context.Context, d *dest) {
	defer n.wg.Done()
	n.mu.Lock()
	force := d.force
	d.force = false
	n.mu.Unlock()
	out, next := n.session(ctx, d, force)
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	defer n.settleLocked(d)
	d.running = false
	n.active--
	n.kickLocked()
	switch out {
	case stopped:
	case held:
		d.heldUntil = now.Add(n.store.LeaseTTL())
		n.scheduleLocked(d, d.heldUntil) // in case the holder died
	case trouble:
		n.scheduleLocked(d, now.Add(time.Second+rand.N(time.Second)))
	case failed:
		n.scheduleLocked(d, next)
		if d.rerun && d.force {
			n.scheduleLocked(d, now)
		}
	case drained:
		switch {
		case d.rerun || d.force:
			n.scheduleLocked(d, now)
		case d.state.Attempts == 0:
			// Let go: the record (and the consumer with it) stays while
			// the registry has room, for the next notification.
		default:
			n.scheduleLocked(d, d.state.NextAttempt)
		}
	}
	d.rerun = false
}

// setState records the state of d (after this process wrote it).
func (n *notifier) setState(d *dest, st notify.State) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.setStateLocked(d, st)
	n.settleLocked(d)
}

// setStateLocked sets d's state and keeps the count of failing
// destinations. n.mu held.
func (n *notifier) setStateLocked(d *dest, st notify.State) {
	if (d.state.Attempts > 0) != (st.Attempts > 0) {
		if st.Attempts > 0 {
			n.failing.Add(1)
		} else {
			n.failing.Add(-1)
		}
	}
	d.state = st
}

// watchStates follows the state bucket: every process learns of the
// failing destinations and of their next attempts (and of fedctl's retry).
func (n *notifier) watchStates(ctx context.Context) {
	defer n.wg.Done()
	for {
		err := n.watchOnce(ctx)
		if n.stopping() {
			return
		}
		n.log.Debug("state watch ended, watching again", "err", err)
		select {
		case <-n.stop:
			return
		case <-time.After(time.Second):
		}
	}
}

func (n *notifier) watchOnce(ctx context.Context) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := n.store.WatchStates(wctx)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-n.stop:
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if e == nil {
				continue // the initial values are done
			}
			n.onState(e)
		}
	}
}

// onState applies one change of the state bucket.
func (n *notifier) onState(e jetstream.KeyValueEntry) {
	domain := e.Key()
	var st notify.State
	if e.Operation() == jetstream.KeyValuePut {
		var err error
		if st, err = notify.DecodeState(e.Value()); err != nil {
			return
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if st.Attempts == 0 {
		if d := n.f.remotes.findDest(domain); d != nil {
			n.setStateLocked(d, notify.State{})
			n.settleLocked(d)
		}
		return
	}
	d := n.getLocked(domain)
	defer n.settleLocked(d)
	n.setStateLocked(d, st)
	if st.NextAttempt.IsZero() {
		d.force = true // fedctl: retry now
	}
	n.scheduleLocked(d, st.NextAttempt)
}

// scanLoop scans the stream now and every ScanInterval.
func (n *notifier) scanLoop(ctx context.Context) {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.ScanInterval)
	defer t.Stop()
	for {
		if err := n.scan(ctx); err != nil {
			n.log.Debug("notification scan", "err", err)
		}
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
	}
}

// scan finds the destinations with a backlog (after a restart, or when
// wake-up messages were lost), sets aside the notifications on subjects
// that name no destination, and warns about a filling stream and long
// outages, long before they matter.
func (n *notifier) scan(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	counts, invalid, err := notify.Backlog(ctx, n.stream, n.f.subjects)
	if err != nil {
		return err
	}
	for domain := range counts {
		n.wake(domain, false)
	}
	if len(invalid) > 0 {
		n.sweep(ctx, invalid)
	}
	n.warn(ctx, counts)
	return nil
}

// warn logs the stream's fill level when it crosses 50, 80 or 95%, and, at
// most hourly per destination, a destination that has been failing for an
// hour or more.
func (n *notifier) warn(ctx context.Context, counts map[string]uint64) {
	info := n.stream.CachedInfo()
	if info != nil && info.Config.MaxBytes > 0 {
		pct := int(info.State.Bytes * 100 / uint64(info.Config.MaxBytes))
		level := 0
		for _, l := range []int{50, 80, 95} {
			if pct >= l {
				level = l
			}
		}
		n.mu.Lock()
		changed := level != n.full
		n.full = level
		n.mu.Unlock()
		if changed && level > 0 {
			n.log.Warn("notification stream filling up: when full, new notifications are refused (notification-store-full)",
				"stream", n.cfg.Stream, "percent_full", pct, "bytes", info.State.Bytes, "max_bytes", info.Config.MaxBytes)
		}
	}
	now := time.Now()
	type outage struct {
		domain string
		st     notify.State
	}
	var long []outage
	n.mu.Lock()
	for domain, count := range counts {
		d := n.f.remotes.findDest(domain)
		if d == nil || count == 0 || d.state.Attempts == 0 || now.Sub(d.state.FailingSince) < time.Hour || now.Sub(d.warned) < time.Hour {
			continue
		}
		d.warned = now
		long = append(long, outage{domain, d.state})
	}
	n.mu.Unlock()
	for _, o := range long {
		attrs := []any{"remote", o.domain, "backlog", counts[o.domain], "failing_since", o.st.FailingSince.UTC().Format(time.RFC3339),
			"attempts", o.st.Attempts, "last_error", o.st.LastError}
		if m, err := notify.Oldest(ctx, n.stream, n.f.subjects, o.domain); err == nil {
			attrs = append(attrs, "oldest", m.Time.UTC().Format(time.RFC3339))
		}
		if n.cfg.MaxAge > 0 {
			attrs = append(attrs, "max_age", n.cfg.MaxAge.String())
		} else {
			attrs = append(attrs, "max_age", "none: kept until delivered, purged or the stream is full")
		}
		n.log.Warn("destination unreachable for an hour or more; its notifications wait", attrs...)
	}
}
