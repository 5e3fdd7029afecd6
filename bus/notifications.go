package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/contract"
)

// Notification is an inbound notification as a component's handler sees
// it (contract section 6).
type Notification struct {
	ID          string // the sender's ce-id, unique per origin
	Origin      string // verified origin domain (set by the ingress)
	Component   string
	RPC         string
	TraceParent string
	Body        []byte
	// Stored is when the ingress stored it.
	Stored time.Time
	// Delivery counts the times it was handed to this component, 1 the
	// first time: more after a handler error, or when an instance stopped
	// (or died) before acknowledging it, in which case the handler may
	// have seen it before.
	Delivery uint64
}

// NotificationHandler handles one inbound notification. nil acknowledges
// it; an error has it handed over again later (the notifications of the
// same origin wait behind it, so that their order holds), unless the
// error is Permanent.
type NotificationHandler func(ctx context.Context, n *Notification) error

// permanentError marks a handler error that must not be retried.
type permanentError struct{ err error }

func (e permanentError) Error() string { return "permanent: " + e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent wraps a handler error that retrying cannot cure: the
// notification is dropped (terminated in JetStream, logged) and the next
// one of its origin is handled.
func Permanent(err error) error { return permanentError{err} }

// NotificationOptions configure ServeNotifications; zero fields take the
// defaults.
type NotificationOptions struct {
	// Stream is the inbound notification stream (FED_INBOX_STREAM of the
	// ingress): contract.DefaultInboxStream by default.
	Stream string
	// MaxInFlight bounds the notifications the instance holds at once
	// (the consumer's MaxAckPending): 256 by default.
	MaxInFlight int
	// AckWait is how long a notification handed to an instance that then
	// goes silent stays with it before it is handed to another (the
	// instance extends it while it is busy): 30s by default.
	AckWait time.Duration
	// RetryMax caps the wait between two attempts of a failing handler
	// (1s, doubling, jittered): 30s by default.
	RetryMax time.Duration
	// Logger receives the lines of the serve loop (required).
	Logger *slog.Logger
}

// Defaults of NotificationOptions.
const (
	DefaultNotificationInFlight = 256
	DefaultNotificationAckWait  = 30 * time.Second
	DefaultNotificationRetryMax = 30 * time.Second
	// maxNotificationPull bounds how long one pull request of the serve
	// loop waits (half of AckWait when that is shorter); the pin of the
	// instance is renewed with each.
	maxNotificationPull = 5 * time.Second
	// handledMemory bounds the stream sequences remembered as handled
	// whose acknowledgement could not be confirmed.
	handledMemory = 4096
)

// NotificationServer consumes a component's inbound notifications.
//
// All instances of a component share one durable JetStream consumer, named
// after the component, on fed.inbox.<component>.>, in the priority group
// contract.InboxConsumerGroup with the pinned policy: the server hands the
// notifications to one instance at a time (another takes over once it has
// been silent for AckWait plus two pull periods, after the notifications
// it held are free again), so that their order per origin holds across
// instances. Within the instance, the notifications of one origin are
// handled one after another in order, those of different origins
// concurrently.
type NotificationServer struct {
	stream    jetstream.Stream
	consumer  jetstream.Consumer
	cc        jetstream.ConsumeContext
	subjects  contract.Subjects
	component string
	handler   NotificationHandler
	opts      NotificationOptions
	log       *slog.Logger
	ctx       context.Context // the handlers' (ServeNotifications's ctx)
	stop      chan struct{}   // closed by Shutdown: ends retry waits and the keep-alive
	wg        sync.WaitGroup  // the origin runners, acknowledgers and the keep-alive

	mu      sync.Mutex
	origins map[string]*originQueue
	held    map[uint64]jetstream.Msg // stream sequence → message, every message held
	handled *seqSet                  // handled, acknowledgement unconfirmed
	stopped bool
}

// originQueue is the notifications of one origin waiting to be handled,
// in stream order; one runner goroutine handles them while it is not
// empty.
type originQueue struct {
	msgs []queued
	// verified: the runner checked, for its first notification, that no
	// earlier one of the origin was left in the stream.
	verified bool
}

// queued is a notification in an originQueue.
type queued struct {
	msg       jetstream.Msg
	seq       uint64 // stream sequence
	delivered uint64 // times the server handed it out
}

// insert puts e in stream order (usually at the end).
func (q *originQueue) insert(e queued) {
	i := len(q.msgs)
	for i > 0 && q.msgs[i-1].seq > e.seq {
		i--
	}
	q.msgs = slices.Insert(q.msgs, i, e)
}

// remove takes out the notification of seq.
func (q *originQueue) remove(seq uint64) {
	q.msgs = slices.DeleteFunc(q.msgs, func(e queued) bool { return e.seq == seq })
}

// ServeNotifications starts consuming the notifications of component from
// the inbound stream with js and hands each to handler, with the verified
// origin; it acknowledges a notification once handler returned nil. The
// consumer is created when it does not exist; while the stream does not
// (the ingress creates it) or JetStream cannot be reached, it tries again
// every second in the background. Handler contexts derive from ctx
// (cancelling it cancels running handlers); Shutdown stops it.
func ServeNotifications(ctx context.Context, js jetstream.JetStream, subjects contract.Subjects, component string, handler NotificationHandler, opts NotificationOptions) (*NotificationServer, error) {
	filter, err := subjects.InboxComponent(component)
	if err != nil {
		return nil, fmt.Errorf("serve notifications of %s: %w", component, err)
	}
	if opts.Logger == nil {
		return nil, fmt.Errorf("serve notifications of %s: %w", component, ErrNoLogger)
	}
	if opts.Stream == "" {
		opts.Stream = contract.DefaultInboxStream
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultNotificationInFlight
	}
	if opts.AckWait <= 0 {
		opts.AckWait = DefaultNotificationAckWait
	}
	if opts.RetryMax <= 0 {
		opts.RetryMax = DefaultNotificationRetryMax
	}
	s := &NotificationServer{
		subjects: subjects, component: component, handler: handler, opts: opts,
		log: opts.Logger.With("component", component), ctx: ctx, stop: make(chan struct{}),
		origins: make(map[string]*originQueue), held: make(map[uint64]jetstream.Msg), handled: newSeqSet(handledMemory),
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for attempt := 0; ; attempt++ {
			err := s.start(js, filter)
			if err == nil {
				return
			}
			if attempt == 0 || attempt%60 == 0 {
				s.log.Warn("notifications not served yet, trying again every second", "stream", opts.Stream, "err", err)
			}
			select {
			case <-s.stop:
				return
			case <-time.After(time.Second):
			}
		}
	}()
	return s, nil
}

// start finds the stream, creates the consumer and starts consuming.
func (s *NotificationServer) start(js jetstream.JetStream, filter string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 10*time.Second)
	defer cancel()
	opts := s.opts
	stream, err := js.Stream(ctx, opts.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", opts.Stream, err)
	}
	consumer, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:        s.component,
		Description:    "fedbus: inbound notifications of " + s.component,
		FilterSubject:  filter,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        opts.AckWait,
		MaxDeliver:     -1,
		MaxAckPending:  opts.MaxInFlight,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{contract.InboxConsumerGroup},
		// Longer than AckWait plus a pull period: when the pinned
		// instance dies, the notifications it held are free again (in
		// stream order, ahead of newer ones) before another instance is
		// pinned.
		PinnedTTL: opts.AckWait + 2*pullWait(opts.AckWait),
	})
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	// Consume hands the messages to onMsg from one goroutine, in order.
	cc, err := consumer.Consume(s.onMsg,
		jetstream.PullPriorityGroup(contract.InboxConsumerGroup),
		jetstream.PullMaxMessages(opts.MaxInFlight),
		jetstream.PullExpiry(pullWait(opts.AckWait)),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				s.log.Debug("notification pull", "err", err)
			}
		}))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	s.stream, s.consumer, s.cc = stream, consumer, cc
	s.wg.Add(1)
	go s.keepAlive()
	s.log.Info("serving notifications", "stream", opts.Stream, "filter", filter)
	return nil
}

// onMsg queues a message behind the others of its origin.
func (s *NotificationServer) onMsg(msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		s.log.Warn("notification without metadata dropped", "subject", msg.Subject(), "err", err)
		_ = msg.Term()
		return
	}
	seq := md.Sequence.Stream
	route, err := s.subjects.ParseInbox(msg.Subject())
	if err != nil {
		s.log.Warn("notification on an invalid subject dropped", "subject", msg.Subject(), "err", err)
		_ = msg.TermWithReason("invalid subject")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		_ = msg.Nak()
		return
	}
	if _, ok := s.held[seq]; ok {
		// A second copy of one still held (its ack wait passed while it
		// waited): the held copy is handled, this one dropped.
		return
	}
	if s.handled.has(seq) {
		// Handled already; its acknowledgement was not confirmed.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.ack(msg, seq)
		}()
		return
	}
	s.held[seq] = msg
	e := queued{msg: msg, seq: seq, delivered: md.NumDelivered}
	q := s.origins[route.Domain]
	if q != nil {
		q.insert(e)
		return
	}
	q = &originQueue{msgs: []queued{e}}
	s.origins[route.Domain] = q
	s.wg.Add(1)
	go s.runOrigin(route.Domain, q)
}

// runOrigin handles the queue of one origin in order until it is empty.
func (s *NotificationServer) runOrigin(origin string, q *originQueue) {
	defer s.wg.Done()
	for {
		s.mu.Lock()
		if len(q.msgs) == 0 || s.stopped {
			if s.origins[origin] == q {
				delete(s.origins, origin)
			}
			s.mu.Unlock()
			return
		}
		head := q.msgs[0]
		check := !q.verified || head.delivered > 1
		s.mu.Unlock()
		if check {
			switch s.order(origin, head.seq) {
			case orderWait:
				t := time.NewTimer(orderPoll)
				select {
				case <-s.stop:
					t.Stop()
					return
				case <-t.C:
				}
				continue
			case orderSkip:
				s.log.Info("notification handled already (no longer in the stream), acknowledged again", "stream_seq", head.seq, "origin", origin)
				s.ack(head.msg, head.seq)
				s.mu.Lock()
				q.remove(head.seq)
				s.mu.Unlock()
				continue
			}
			s.mu.Lock()
			q.verified = true
			s.mu.Unlock()
		}
		if !s.handle(head.msg) {
			return // stopping: the rest is given back by Shutdown
		}
		s.mu.Lock()
		q.remove(head.seq)
		s.mu.Unlock()
	}
}

// What runOrigin does with the first notification of its queue.
const (
	orderHandle = iota // it is the first of its origin in the stream
	orderWait          // an earlier one is still on its way (with another instance, or being handed back)
	orderSkip          // it is no longer in the stream: handled already
)

// orderPoll is how often a runner waiting for an earlier notification of
// its origin looks again.
const orderPoll = 100 * time.Millisecond

// order checks, in the stream, that the notification seq is the first of
// its origin still there (the inbox is a work queue: handled ones are
// gone). It runs for a runner's first notification and for every one
// handed out again: after an instance died, or two instances both believed
// they were pinned (a NATS restart), the server hands notifications back
// in the order their ack waits ran out, not in stream order.
func (s *NotificationServer) order(origin string, seq uint64) int {
	filter, err := s.subjects.InboxOrigin(s.component, origin)
	if err != nil {
		return orderHandle
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 2*time.Second)
	defer cancel()
	first, err := s.stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(filter))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return orderSkip
	case err != nil:
		s.log.Debug("first notification of an origin", "origin", origin, "err", err)
		return orderWait
	case first.Sequence == seq:
		return orderHandle
	case first.Sequence > seq:
		return orderSkip
	default:
		return orderWait
	}
}

// handle runs the handler on msg until it succeeds or fails permanently,
// and acknowledges it. It returns false when the server stopped first.
func (s *NotificationServer) handle(msg jetstream.Msg) bool {
	md, _ := msg.Metadata() // checked by onMsg
	seq := md.Sequence.Stream
	n, err := s.notification(msg, md)
	if err != nil {
		s.log.Warn("invalid notification dropped", "subject", msg.Subject(), "stream_seq", seq, "err", err)
		_ = msg.TermWithReason("invalid notification")
		s.release(seq)
		return true
	}
	for attempt := 0; ; attempt++ {
		err := s.call(n)
		if err == nil {
			s.ack(msg, seq)
			return true
		}
		var perm permanentError
		if errors.As(err, &perm) {
			s.log.Warn("notification handler failed permanently, notification dropped",
				"request_id", n.ID, "origin", n.Origin, "rpc", n.RPC, "err", perm.err)
			_ = msg.TermWithReason("handler: " + contract.Truncate(perm.err.Error(), 200))
			s.release(seq)
			return true
		}
		wait := retryWait(attempt, s.opts.RetryMax)
		s.log.Info("notification handler failed, retrying; later notifications of its origin wait",
			"request_id", n.ID, "origin", n.Origin, "rpc", n.RPC, "attempt", attempt+1, "retry_in", wait.String(), "err", err)
		t := time.NewTimer(wait)
		select {
		case <-s.stop:
			t.Stop()
			return false
		case <-t.C:
		}
		n.Delivery++
	}
}

// call runs the handler, turning a panic into an error.
func (s *NotificationServer) call(n *Notification) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return s.handler(s.ctx, n)
}

// notification decodes msg for the handler.
func (s *NotificationServer) notification(msg jetstream.Msg, md *jetstream.MsgMetadata) (*Notification, error) {
	ev, err := Decode(&nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()})
	if err != nil {
		return nil, err
	}
	route, err := s.subjects.ParseInbox(msg.Subject())
	if err != nil {
		return nil, err
	}
	if ev.OriginDomain != "" && ev.OriginDomain != route.Domain {
		return nil, contract.Errorf(contract.LabelNoOriginDomain, "origin header %q disagrees with subject", contract.Truncate(ev.OriginDomain, 64))
	}
	return &Notification{ID: ev.ID, Origin: route.Domain, Component: route.Component, RPC: route.RPC,
		TraceParent: ev.TraceParent, Body: ev.Data, Stored: md.Timestamp, Delivery: md.NumDelivered}, nil
}

// ack acknowledges a handled message and waits for the server's
// confirmation, trying again for a while; an unconfirmed sequence is
// remembered, so that a copy handed over again is acknowledged without
// calling the handler twice.
func (s *NotificationServer) ack(msg jetstream.Msg, seq uint64) {
	var err error
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), 2*time.Second)
		err = msg.DoubleAck(ctx)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			s.mu.Lock()
			delete(s.held, seq)
			s.handled.remove(seq)
			s.mu.Unlock()
			return
		}
		time.Sleep(time.Duration(i+1) * 200 * time.Millisecond)
	}
	s.log.Warn("acknowledgement of a handled notification not confirmed; a copy handed over again is acknowledged without the handler", "stream_seq", seq, "err", err)
	s.mu.Lock()
	delete(s.held, seq)
	s.handled.add(seq)
	s.mu.Unlock()
}

// release forgets a message that is done (terminated).
func (s *NotificationServer) release(seq uint64) {
	s.mu.Lock()
	delete(s.held, seq)
	s.mu.Unlock()
}

// keepAlive tells the server, every third of AckWait, that the held
// messages are in progress, so that none is handed to another instance
// while it waits here behind a slow or failing one of its origin.
func (s *NotificationServer) keepAlive() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		msgs := make([]jetstream.Msg, 0, len(s.held))
		for _, m := range s.held {
			msgs = append(msgs, m)
		}
		s.mu.Unlock()
		for _, m := range msgs {
			_ = m.InProgress()
		}
	}
}

// Shutdown stops taking notifications, lets the running handlers finish
// (bounded by ctx; a failing one is not retried again), gives the
// notifications not handled back in stream order and releases the pin, so
// that another instance continues at once.
func (s *NotificationServer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	cc, stream := s.cc, s.stream
	s.mu.Unlock()
	if cc != nil {
		cc.Stop()
	}
	// End retry waits; handlers running now finish with the context they
	// have (it derives from the ServeNotifications context).
	close(s.stop)
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("shutdown notifications of %s: %w", s.component, ctx.Err())
	}
	s.mu.Lock()
	seqs := make([]uint64, 0, len(s.held))
	for seq := range s.held {
		seqs = append(seqs, seq)
	}
	msgs := s.held
	s.held = map[uint64]jetstream.Msg{}
	s.mu.Unlock()
	slices.Sort(seqs)
	for _, seq := range seqs {
		_ = msgs[seq].Nak()
	}
	if stream != nil {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		if uerr := stream.UnpinConsumer(uctx, s.component, contract.InboxConsumerGroup); uerr != nil && !errors.Is(uerr, jetstream.ErrConsumerNotFound) {
			s.log.Debug("unpin", "err", uerr)
		}
	}
	s.log.Info("stopped serving notifications", "given_back", len(seqs))
	return err
}

// pullWait is how long a pull request waits: half of AckWait, between 1s
// (nats.go's least) and maxNotificationPull.
func pullWait(ackWait time.Duration) time.Duration {
	return min(max(ackWait/2, time.Second), maxNotificationPull)
}

// retryWait is the jittered exponential wait before attempt+1: 1s,
// doubling, capped, each between half and all of it.
func retryWait(attempt int, limit time.Duration) time.Duration {
	d := time.Second << min(attempt, 30)
	if d > limit || d <= 0 {
		d = limit
	}
	return d/2 + rand.N(d/2+1)
}

// seqSet is a bounded set of stream sequences: the oldest is forgotten
// when it is full.
type seqSet struct {
	max   int
	order []uint64
	set   map[uint64]struct{}
}

func newSeqSet(max int) *seqSet { return &seqSet{max: max, set: make(map[uint64]struct{})} }

func (s *seqSet) has(seq uint64) bool { _, ok := s.set[seq]; return ok }

func (s *seqSet) add(seq uint64) {
	if s.has(seq) {
		return
	}
	if len(s.order) >= s.max {
		delete(s.set, s.order[0])
		s.order = s.order[1:]
	}
	s.order = append(s.order, seq)
	s.set[seq] = struct{}{}
}

func (s *seqSet) remove(seq uint64) { delete(s.set, seq) }
