package federator

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/notify"
)

// item is one fetched notification on its way.
type item struct {
	msg   jetstream.Msg
	seq   uint64 // stream sequence
	route contract.Route
	ev    bus.Event
	md    *jetstream.MsgMetadata
	done  bool // acknowledged, set aside or given back
}

// session is one worker's delivery of one destination while it holds the
// lease.
type session struct {
	n      *notifier
	d      *dest
	domain string
	lease  *notify.Lease
	cons   jetstream.Consumer
	ctx    context.Context    // ends when the lease is lost
	cancel context.CancelFunc // of ctx
	state  notify.State       // the destination's, as of the start
	drop   bool               // delete the consumer at the end

	mu   sync.Mutex
	held []*item // fetched, not yet done
}

// session delivers d until its backlog is empty, a failure that may pass,
// shutdown, or the loss of the lease; it returns how it ended and, for
// failed, when the next attempt is due.
func (n *notifier) session(ctx context.Context, d *dest, force bool) (outcome, time.Time) {
	domain := d.domain
	if n.stopping() {
		return stopped, time.Time{}
	}
	lease, err := n.store.Acquire(ctx, domain, n.id)
	if errors.Is(err, notify.ErrLeaseHeld) {
		return held, time.Time{}
	}
	if err != nil {
		n.log.Debug("acquire lease", "remote", domain, "err", err)
		return trouble, time.Time{}
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &session{n: n, d: d, domain: domain, lease: lease, ctx: sctx, cancel: cancel}
	defer s.end()
	n.mu.Lock()
	st := d.state // kept current by the watch of the state bucket
	n.mu.Unlock()
	if st.Attempts > 0 {
		// Failing: the freshest word (another worker may have tried
		// since, or fedctl asked for a retry).
		if st, err = n.store.State(sctx, domain); err != nil {
			return trouble, time.Time{}
		}
		n.setState(d, st)
	}
	s.state = st
	now := time.Now()
	if !force && st.Attempts > 0 && st.NextAttempt.After(now) {
		return failed, st.NextAttempt // another worker failed meanwhile
	}
	if until, waiting := n.f.remotes.waiting(domain); waiting {
		return failed, until // the remote's 429: its Retry-After
	}
	n.mu.Lock()
	s.cons = d.cons
	n.mu.Unlock()
	if s.cons == nil {
		if s.cons, err = n.consumer(sctx, domain); err != nil {
			n.log.Debug("destination consumer", "remote", domain, "err", err)
			return trouble, time.Time{}
		}
	}
	if err := s.fresh(); err != nil {
		n.log.Debug("destination consumer", "remote", domain, "err", err)
		n.mu.Lock()
		d.cons = nil
		n.mu.Unlock()
		return trouble, time.Time{}
	}
	n.mu.Lock()
	d.cons = s.cons
	n.mu.Unlock()
	n.wg.Add(1)
	go s.keepAlive()
	out, next := s.run()
	if out == failed && time.Until(next) > consumerIdle {
		// A destination that waits longer than its consumer would live
		// keeps none: it is made again at the next attempt.
		s.drop = true
		n.mu.Lock()
		d.cons = nil
		n.mu.Unlock()
	}
	return out, next
}

// fresh makes sure the consumer hands the destination's notifications out
// in stream order: when some are still out (held by a worker that died or
// lost its lease, or handed back), the server would hand them out again
// in the order their ack waits run out, so the consumer is made again,
// and starts at the destination's first notification in the stream (a
// work queue: delivered ones are gone).
func (s *session) fresh() error {
	info, err := s.cons.Info(s.ctx)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		s.cons, err = s.n.consumer(s.ctx, s.domain)
		return err
	}
	if err != nil {
		return err
	}
	if info.NumAckPending == 0 && info.NumRedelivered == 0 {
		return nil
	}
	if err := s.n.stream.DeleteConsumer(s.ctx, consumerName(s.domain)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return err
	}
	s.cons, err = s.n.consumer(s.ctx, s.domain)
	return err
}

// consumer creates (or finds) the consumer of domain.
func (n *notifier) consumer(ctx context.Context, domain string) (jetstream.Consumer, error) {
	filter, err := n.f.subjects.NotifyDomain(domain)
	if err != nil {
		return nil, err
	}
	return n.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       consumerName(domain),
		Description:   "fedbus: notifications to " + domain,
		FilterSubject: filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
		// Half the lease: the notifications of a worker that died are
		// free again before its lease expires and another takes over.
		AckWait:           n.store.LeaseTTL() / 2,
		MaxDeliver:        -1,
		MaxAckPending:     n.cfg.Batch,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: consumerIdle,
		MemoryStorage:     true,
	})
}

// consumerName is the durable name of a destination's consumer: the
// domain with its dots as underscores (a domain has no underscore, so two
// domains never share a name; at most 2+253 characters).
func consumerName(domain string) string {
	return "d_" + strings.ReplaceAll(domain, ".", "_")
}

// end gives back what is still held, deletes the consumer when asked,
// releases the lease and stops the keep-alive.
func (s *session) end() {
	s.giveBack()
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if s.drop {
		if err := s.n.stream.DeleteConsumer(ctx, consumerName(s.domain)); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			s.n.log.Debug("delete destination consumer", "remote", s.domain, "err", err)
		}
	}
	if err := s.lease.Release(ctx); err != nil {
		s.n.log.Debug("release lease", "remote", s.domain, "err", err)
	}
}

// keepAlive refreshes the lease and tells the consumer that the held
// notifications are in progress, every quarter of the lease, until the
// session ends; a lost lease ends the session.
func (s *session) keepAlive() {
	defer s.n.wg.Done()
	t := time.NewTicker(s.n.store.LeaseTTL() / 4)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.n.store.LeaseTTL()/4)
		err := s.lease.Refresh(ctx)
		cancel()
		if errors.Is(err, notify.ErrLeaseLost) {
			s.n.log.Warn("lease of a destination lost while delivering it; another worker takes over", "remote", s.domain)
			s.cancel()
			return
		}
		s.mu.Lock()
		msgs := make([]jetstream.Msg, 0, len(s.held))
		for _, it := range s.held {
			if !it.done {
				msgs = append(msgs, it.msg)
			}
		}
		s.mu.Unlock()
		for _, m := range msgs {
			_ = m.InProgress()
		}
	}
}

// run is the session's loop: fetch, check, send, settle.
func (s *session) run() (outcome, time.Time) {
	n := s.n
	sent := false
	for again := 0; ; {
		if n.stopping() {
			return stopped, time.Time{}
		}
		if s.ctx.Err() != nil {
			return trouble, time.Time{}
		}
		items, err := s.fetch()
		if err != nil {
			n.log.Debug("fetch", "remote", s.domain, "err", err)
			n.mu.Lock()
			s.d.cons = nil // made again next time
			n.mu.Unlock()
			return trouble, time.Time{}
		}
		if len(items) == 0 {
			// Empty, as far as the consumer knows: it learns of a new
			// notification a moment after the stream stored it (and the
			// wake-up may come first). The stream itself tells: every
			// fetched notification was acknowledged, so one still there
			// is still to be handed out.
			_, err := notify.Oldest(s.ctx, n.stream, n.f.subjects, s.domain)
			if err == nil && again < 200 {
				again++
				time.Sleep(time.Duration(min(again, 10)) * time.Millisecond)
				continue
			}
			if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return trouble, time.Time{}
			}
			if err == nil {
				n.log.Debug("notifications still in the stream are not handed out; trying later", "remote", s.domain)
				return trouble, time.Time{}
			}
			n.mu.Lock()
			rerun := s.d.rerun // woken meanwhile: more came, go on with the lease held
			s.d.rerun = false
			n.mu.Unlock()
			if rerun {
				again = 0
				continue
			}
			if s.state.Attempts > 0 && sent {
				s.recovered()
			}
			return drained, time.Time{}
		}
		again = 0
		delivered, fail := s.process(items)
		s.prune()
		if delivered {
			sent = true
			if s.state.Attempts > 0 {
				s.recovered()
			}
		}
		if fail != nil {
			return failed, s.failed(fail)
		}
	}
}

// fetch takes the next notifications of the destination (at most Batch:
// the consumer's MaxAckPending), in stream order.
func (s *session) fetch() ([]*item, error) {
	batch, err := s.cons.FetchNoWait(s.n.cfg.Batch)
	if err != nil {
		return nil, err
	}
	var items []*item
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			continue // not a JetStream message: cannot be acknowledged either
		}
		items = append(items, &item{msg: m, seq: md.Sequence.Stream, md: md})
	}
	s.hold(items)
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
		return nil, err
	}
	// In stream order (a fresh consumer hands them out so; a guard).
	slices.SortFunc(items, func(a, b *item) int { return compareSeq(a.seq, b.seq) })
	return items, nil
}

func (s *session) hold(items []*item) {
	s.mu.Lock()
	s.held = append(s.held, items...)
	s.mu.Unlock()
}

// giveBack returns every held notification not done to the consumer, in
// stream order, so that they come first again (for whichever worker).
func (s *session) giveBack() {
	s.mu.Lock()
	var rest []*item
	for _, it := range s.held {
		if !it.done {
			it.done = true
			rest = append(rest, it)
		}
	}
	s.held = nil
	s.mu.Unlock()
	slices.SortFunc(rest, func(a, b *item) int { return compareSeq(a.seq, b.seq) })
	for _, it := range rest {
		_ = it.msg.Nak()
	}
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ack acknowledges delivered notifications; the last one waits for the
// server's confirmation, so that the consumer has counted them all before
// the next fetch (acknowledgements are handled in order).
func (s *session) ack(items []*item) {
	for i, it := range items {
		if i == len(items)-1 {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 2*time.Second)
			if err := it.msg.DoubleAck(ctx); err != nil {
				s.n.log.Debug("acknowledgement not confirmed; the notification may be sent again (the remote recognises it)", "remote", s.domain, "err", err)
			}
			cancel()
		} else {
			_ = it.msg.Ack()
		}
		s.settle(it)
	}
}

// prune forgets the held notifications that are done.
func (s *session) prune() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held = slices.DeleteFunc(s.held, func(it *item) bool { return it.done })
}

// settle marks it done.
func (s *session) settle(it *item) {
	s.mu.Lock()
	it.done = true
	s.mu.Unlock()
}

// delivery is the outcome of sending one notification.
type delivery struct {
	err *contract.Error // nil: delivered
	// retry: the failure may pass (network, timeout, 5xx, 429); else the
	// remote refused it for good.
	retry bool
	wait  time.Duration // a 429's Retry-After
}

// process checks, sends and settles fetched notifications in order. It
// reports whether any was delivered, and the failure that stopped it (the
// notifications from there on are given back).
func (s *session) process(items []*item) (delivered bool, fail *delivery) {
	n := s.n
	now := time.Now()
	excess := s.excess()
	var ready []*item
	for _, it := range items {
		e := n.check(it, now)
		if e == nil && excess > 0 {
			e = contract.Errorf(contract.LabelBacklogLimit, "more than FED_NOTIFY_MAX_BACKLOG (%d) notifications to %s wait: the oldest are set aside", n.cfg.MaxBacklog, s.domain)
		}
		excess--
		if e != nil {
			if err := s.setAside(it, e); err != nil {
				return delivered, &delivery{err: contract.AsError(err), retry: true}
			}
			continue
		}
		ready = append(ready, it)
	}
	for len(ready) > 0 {
		if s.ctx.Err() != nil {
			return delivered, &delivery{err: contract.Errorf(contract.LabelTimeout, "the lease of %s was lost", s.domain), retry: true}
		}
		var results []delivery
		var k int
		if cap, ok := n.f.remotes.batch(s.domain); ok && n.cfg.Batch > 1 {
			k = batchLen(ready, min(n.cfg.Batch, cap.entries), min(n.cfg.BatchBytes, cap.bytes))
			results = n.sendBatch(s.ctx, s, ready[:k])
		}
		if results == nil { // no batches: one request, one notification
			k = 1
			results = []delivery{n.sendOne(s.ctx, s, ready[0])}
		}
		var acks []*item
		for i, r := range results {
			it := ready[i]
			switch {
			case r.err == nil:
				acks = append(acks, it)
				delivered = true
			case !r.retry:
				if err := s.setAside(it, r.err); err != nil {
					s.ack(acks)
					return delivered, &delivery{err: contract.AsError(err), retry: true}
				}
			default:
				s.ack(acks)
				return delivered, &r
			}
		}
		s.ack(acks)
		if len(results) < k { // the remote stopped early without saying why
			return delivered, &delivery{err: contract.Errorf(contract.LabelRemoteError, "the batch answer covered %d of %d notifications", len(results), k), retry: true}
		}
		ready = ready[k:]
	}
	return delivered, nil
}

// excess is how many notifications of the destination are beyond
// MaxBacklog (0 without a limit): the oldest, which the fetched batch
// starts with.
func (s *session) excess() int64 {
	max := s.n.cfg.MaxBacklog
	if max <= 0 {
		return 0
	}
	filter, err := s.n.f.subjects.NotifyDomain(s.domain)
	if err != nil {
		return 0
	}
	info, err := s.n.stream.Info(s.ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0
	}
	var total int64
	for _, c := range info.State.Subjects {
		total += int64(c)
	}
	return total - max
}

// batchLen is how many of items go in the next batch: at most entries, and
// at most bytes of bodies (at least one).
func batchLen(items []*item, entries int, bytes int64) int {
	var size int64
	for i, it := range items {
		size += int64(len(it.msg.Data())) + 256 // the entry's fields
		if i >= entries || (i > 0 && size > bytes) {
			return i
		}
	}
	return len(items)
}

// check returns why a notification is set aside before it is sent, or nil:
// it must be a valid CloudEvent on a subject that names a component of
// FED_COMPONENTS and a destination the policy allows, and younger than
// MaxAge.
func (n *notifier) check(it *item, now time.Time) *contract.Error {
	m := it.msg
	subject := m.Subject()
	r, err := n.f.subjects.ParseNotify(subject)
	if err != nil {
		return contract.AsError(err)
	}
	if _, ok := notify.Destination(n.f.subjects, subject); !ok {
		return contract.Errorf(contract.LabelDomainParseError, "subject %s is not canonical (upper case or IDNA form)", contract.Quote(subject))
	}
	it.route = r
	ev, err := bus.Decode(&nats.Msg{Subject: subject, Header: m.Headers(), Data: m.Data()})
	if err != nil {
		return contract.AsError(err)
	}
	if !contract.ValidRequestID(ev.ID) {
		return contract.Errorf(contract.LabelInvalidRequest, "notification id %q is not 1 to 128 printable ASCII characters without spaces", contract.Truncate(ev.ID, 64))
	}
	it.ev = ev
	if !slices.Contains(n.f.components, r.Component) {
		return contract.Errorf(contract.LabelUnknownComponent, "component %s is not federated (FED_COMPONENTS)", r.Component)
	}
	if err := n.f.deps.Policy.Check(r.Domain); err != nil {
		return contract.AsError(err)
	}
	if n.cfg.MaxAge > 0 && now.Sub(it.md.Timestamp) > n.cfg.MaxAge {
		return contract.Errorf(contract.LabelNotificationExpired, "stored %s ago, longer than FED_NOTIFY_MAX_AGE (%s)", now.Sub(it.md.Timestamp).Round(time.Second), n.cfg.MaxAge)
	}
	return nil
}

// setAside moves a notification to the dead-letter stream with its reason,
// then acknowledges it.
func (s *session) setAside(it *item, e *contract.Error) error {
	n := s.n
	attempts := s.state.Attempts + 1
	if it.md != nil && int(it.md.NumDelivered) > attempts {
		attempts = int(it.md.NumDelivered)
	}
	var published time.Time
	if it.md != nil {
		published = it.md.Timestamp
	}
	msg := notify.DeadMessage(n.f.subjects, it.msg.Subject(), it.msg.Headers(), it.msg.Data(), it.seq, e, attempts, published, time.Now())
	if _, err := n.js.PublishMsg(s.ctx, msg); err != nil {
		n.log.Warn("dead letter not stored; the notification stays and is tried again", "remote", s.domain, "request_id", it.ev.ID, "err", err)
		return err
	}
	_ = it.msg.Ack()
	s.settle(it)
	n.log.Warn("notification set aside as a dead letter", "remote", s.domain, "request_id", it.ev.ID, "subject", it.msg.Subject(),
		"label", e.Label, "status", e.Code, "err", e.Message, "dead_subject", msg.Subject)
	return nil
}

// failed records a failed attempt in the state and returns when the next
// one is due: jittered exponential backoff from RetryMin up to RetryMax,
// not before a 429's Retry-After.
func (s *session) failed(f *delivery) time.Time {
	n := s.n
	now := time.Now()
	st := s.state
	if st.Attempts == 0 {
		st.FailingSince = now
	}
	st.Attempts++
	wait := backoff(st.Attempts, n.cfg.RetryMin, n.cfg.RetryMax)
	if f.wait > wait {
		wait = f.wait
	}
	st.LastAttempt = now
	st.NextAttempt = now.Add(wait)
	st.LastLabel = f.err.Label
	st.LastError = contract.Truncate(f.err.Error(), 512)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 2*time.Second)
	defer cancel()
	if err := n.store.PutState(ctx, s.domain, st); err != nil {
		n.log.Debug("put state", "remote", s.domain, "err", err)
	}
	n.setState(s.d, st)
	s.state = st
	level := n.log.Info
	if st.Attempts == 1 || st.Attempts%10 == 0 {
		level = n.log.Warn
	}
	level("delivery of notifications failed; retrying later, later notifications of the destination wait",
		"remote", s.domain, "attempts", st.Attempts, "next_attempt_in", wait.Round(time.Millisecond).String(), "label", f.err.Label, "err", f.err.Message)
	return st.NextAttempt
}

// recovered clears the state of a destination that delivers again.
func (s *session) recovered() {
	n := s.n
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 2*time.Second)
	defer cancel()
	if err := n.store.ClearState(ctx, s.domain); err != nil {
		n.log.Debug("clear state", "remote", s.domain, "err", err)
		return
	}
	n.log.Info("destination delivers again", "remote", s.domain, "after_attempts", s.state.Attempts,
		"failing_for", time.Since(s.state.FailingSince).Round(time.Second).String())
	s.state = notify.State{}
	n.setState(s.d, s.state)
}

// backoff is the wait after the attempts-th failure: min doubled each
// time, capped at max, each between half and all of it.
func backoff(attempts int, lo, hi time.Duration) time.Duration {
	d := lo << min(attempts-1, 40)
	if d > hi || d <= 0 {
		d = hi
	}
	return d/2 + rand.N(d/2+1)
}

// sweep sets aside the notifications on subjects that name no destination
// (published around the bus client): no destination's consumer sees them.
// One worker at a time sweeps (the lease of "_sweep", a key no domain
// takes).
func (n *notifier) sweep(ctx context.Context, subjects []string) {
	lease, err := n.store.Acquire(ctx, "_sweep", n.id)
	if err != nil {
		return
	}
	defer func() { _ = lease.Release(context.WithoutCancel(ctx)) }()
	for _, subject := range subjects {
		reason := contract.Errorf(contract.LabelDomainParseError, "subject %s is not canonical (upper case or IDNA form)", contract.Quote(subject))
		if _, err := n.f.subjects.ParseNotify(subject); err != nil {
			reason = contract.AsError(err)
		}
		for range 10000 {
			if n.stopping() || lease.Remaining(time.Now()) < time.Second {
				return
			}
			m, err := n.stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject))
			if err != nil {
				break
			}
			dead := notify.DeadMessage(n.f.subjects, subject, m.Header, m.Data, m.Sequence, reason, 0, m.Time, time.Now())
			if _, err := n.js.PublishMsg(ctx, dead); err != nil {
				n.log.Warn("dead letter not stored", "subject", subject, "err", err)
				return
			}
			if err := n.stream.DeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return
			}
			n.log.Warn("notification on a subject that names no destination set aside as a dead letter",
				"subject", subject, "label", reason.Label, "err", reason.Message, "request_id", m.Header.Get(contract.HeaderID))
		}
	}
}
