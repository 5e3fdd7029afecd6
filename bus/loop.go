package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/contract"
)

// DefaultMaxInFlight bounds the requests one Loop handles at once when
// LoopConfig.MaxInFlight is zero.
const DefaultMaxInFlight = 512

// ErrNoLogger is returned by Listen and Serve without a logger: every
// request path logs to the logger its owner passed down.
var ErrNoLogger = errors.New("bus: no logger")

// LoopConfig configures a Loop.
type LoopConfig struct {
	// Subject and Queue are the subscription: every Loop of one queue
	// group shares the subject's messages.
	Subject, Queue string
	// MaxInFlight bounds the handlers running at once (DefaultMaxInFlight
	// when zero); more requests wait in the subscription.
	MaxInFlight int
	// PendingBytes bounds the bytes waiting in the subscription (0: no
	// limit).
	PendingBytes int
	// Source is the ce-source of the error replies the Loop itself sends
	// (to a request that is not a CloudEvent).
	Source string
	// Logger receives the loop's own lines (required).
	Logger *slog.Logger
}

// EventHandler answers one decoded request: it returns the reply event
// (fedbus.response or fedbus.error). subject is the request's subject.
type EventHandler func(ctx context.Context, subject string, ev Event) Event

// Loop is the serve loop of fedbus's NATS services, shared by Server (a
// component's inbound requests) and the federator's workers (components'
// outbound requests): a queue subscription, handlers running concurrently
// up to a bound, each request decoded and answered exactly once through
// an Outbox (a request that is not a CloudEvent gets invalid-request; a
// reply larger than the server's max payload is replaced by
// payload-too-large), and a graceful Shutdown.
type Loop struct {
	cfg   LoopConfig
	nc    *nats.Conn
	h     EventHandler
	log   *slog.Logger
	out   *Outbox
	sem   chan struct{}
	wg    sync.WaitGroup
	onMsg nats.MsgHandler // the subscription's callback (handler contexts from Listen's)
	// unregister removes the Loop from the users that move with the
	// connection off a server in lame-duck mode (lameduck.go).
	unregister func()

	mu       sync.Mutex
	sub      *nats.Subscription // replaced when the connection moves
	drained  *nats.Subscription // drained by a move, not yet replaced
	stopping bool               // Shutdown was called: no new subscription

	stats Counter // for NATS service discovery (Announce)
}

// Counter counts the requests a service answered, for the NATS micro
// service protocol (Announce). The zero value is ready; safe for
// concurrent use.
type Counter struct {
	requests, errors atomic.Int64
	nanos            atomic.Int64 // time spent handling requests
	lastError        atomic.Pointer[string]
}

// Record counts one request that took d; a non-nil e counts an error.
func (c *Counter) Record(d time.Duration, e *contract.Error) {
	c.requests.Add(1)
	c.nanos.Add(int64(d))
	if e != nil {
		c.errors.Add(1)
		last := e.Label + ": " + contract.Truncate(e.Message, 200)
		c.lastError.Store(&last)
	}
}

// Stats returns the counts.
func (c *Counter) Stats() LoopStats {
	s := LoopStats{Requests: c.requests.Load(), Errors: c.errors.Load(), Processing: time.Duration(c.nanos.Load())}
	if p := c.lastError.Load(); p != nil {
		s.LastError = *p
	}
	return s
}

// LoopStats are a service's counts since it started: the requests
// answered, those answered with an error, the last error (label:
// message), and the time spent handling them.
type LoopStats struct {
	Requests, Errors int64
	LastError        string
	Processing       time.Duration
}

// Stats returns the Loop's counts.
func (l *Loop) Stats() LoopStats { return l.stats.Stats() }

// PendingBytes returns the bytes of the requests received and not yet
// taken by a handler.
func (l *Loop) PendingBytes() int {
	l.mu.Lock()
	sub := l.sub
	l.mu.Unlock()
	_, b, err := sub.Pending()
	if err != nil {
		return 0
	}
	return b
}

// count records one answered request.
func (l *Loop) count(start time.Time, reply Event) {
	var e *contract.Error
	if reply.Type == contract.TypeError {
		e = contract.ParseError(0, reply.Data)
	}
	l.stats.Record(time.Since(start), e)
}

// Listen subscribes h on nc. Handler contexts derive from ctx: cancelling
// it cancels running handlers (Shutdown stops new ones).
func Listen(ctx context.Context, nc *nats.Conn, cfg LoopConfig, h EventHandler) (*Loop, error) {
	if cfg.Logger == nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Subject, ErrNoLogger)
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	pending := cfg.PendingBytes
	if pending <= 0 {
		pending = -1
	}
	l := &Loop{cfg: cfg, nc: nc, h: h, log: cfg.Logger, sem: make(chan struct{}, cfg.MaxInFlight)}
	l.cfg.PendingBytes = pending
	l.onMsg = func(msg *nats.Msg) { l.dispatch(ctx, msg) }
	out, err := NewOutbox(nc, l.log)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Subject, err)
	}
	l.out = out
	sub, err := l.subscribe()
	if err != nil {
		l.out.Close()
		return nil, fmt.Errorf("listen on %s: %w", cfg.Subject, err)
	}
	l.sub = sub
	l.unregister = register(nc, l)
	return l, nil
}

// subscribe makes the Loop's queue subscription and returns once the
// server has it.
func (l *Loop) subscribe() (*nats.Subscription, error) {
	sub, err := l.nc.QueueSubscribe(l.cfg.Subject, l.cfg.Queue, l.onMsg)
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	if err := sub.SetPendingLimits(-1, l.cfg.PendingBytes); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("pending limits: %w", err)
	}
	if err := l.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("flush: %w", err)
	}
	return sub, nil
}

// quiesce drains the subscription before the connection moves off a
// server in lame-duck mode: the cluster gives new requests to the other
// members of the queue group; those already delivered are handled (their
// replies are published after the move, nats.go buffers them).
func (l *Loop) quiesce(ctx context.Context) {
	l.mu.Lock()
	sub := l.sub
	stopping := l.stopping
	l.mu.Unlock()
	if stopping {
		return
	}
	if err := sub.Drain(); err != nil {
		l.log.Warn("lame-duck move: drain", "subject", l.cfg.Subject, "err", err)
		return
	}
	l.mu.Lock()
	l.drained = sub
	l.mu.Unlock()
	for sub.IsValid() && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}

// resume subscribes again once the connection has moved (nats.go sends
// the subscription when it is connected, if it is not yet).
func (l *Loop) resume() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopping || l.drained == nil || l.drained != l.sub {
		return
	}
	l.drained = nil
	sub, err := l.nc.QueueSubscribe(l.cfg.Subject, l.cfg.Queue, l.onMsg)
	if err != nil {
		l.log.Error("lame-duck move: subscribe again", "subject", l.cfg.Subject, "err", err)
		return
	}
	_ = sub.SetPendingLimits(-1, l.cfg.PendingBytes)
	l.sub = sub
}

func (l *Loop) dispatch(ctx context.Context, msg *nats.Msg) {
	l.sem <- struct{}{}
	l.wg.Add(1)
	go func() {
		defer func() { <-l.sem; l.wg.Done() }()
		l.handle(ctx, msg)
	}()
}

// handle answers one request exactly once.
func (l *Loop) handle(ctx context.Context, msg *nats.Msg) {
	if msg.Reply == "" {
		// Nobody can be answered: a publish, not a request.
		l.log.Warn("request without reply subject dropped", "subject", msg.Subject)
		return
	}
	start := time.Now()
	ev, err := Decode(msg)
	if err != nil {
		reply := ErrorReply(WantsStructured(msg), l.cfg.Source, contract.AsError(err))
		l.count(start, reply)
		l.reply(msg, reply, "")
		return
	}
	reply := l.h(ctx, msg.Subject, ev)
	l.count(start, reply)
	l.reply(msg, reply, ev.ID)
}

// reply queues the reply on the Outbox (batched with the other handlers'
// replies). A reply the server cannot carry becomes payload-too-large, so
// that the caller is answered at once instead of at its deadline; a reply
// whose publish fails all the same is replaced the same way
// (publishFailed).
func (l *Loop) reply(msg *nats.Msg, ev Event, requestID string) {
	out := ev.Message(msg.Reply)
	if over, limit := tooLarge(l.nc, out); over {
		e := contract.Errorf(contract.LabelPayloadTooLarge, "the reply of %d bytes is larger than this NATS server carries (max_payload %d)", MessageSize(out), limit)
		l.log.Warn("reply too large for NATS, answered with an error", "request_id", requestID, "subject", msg.Subject, "size", MessageSize(out), "max_payload", limit)
		out = ErrorReply(ev.Structured, ev.Source, e).Message(msg.Reply)
	}
	l.out.send(outMsg{msg: out, requestID: requestID, owner: l})
}

// publishFailed answers the caller whose reply could not be published
// with a small error reply (payload-too-large, or component-unavailable
// for any other failure); when that fails too, or the lost reply was
// small already (an error reply would fail the same way), nobody can be
// answered and the loss is logged at WARN.
func (l *Loop) publishFailed(reply *nats.Msg, requestID string, err error) {
	e := PublishError(reply.Subject, MessageSize(reply), err)
	if MessageSize(reply) > smallReply {
		fallback := ErrorReply(WantsStructured(reply), l.cfg.Source, e).Message(reply.Subject)
		ferr := l.nc.PublishMsg(fallback)
		if ferr == nil {
			l.log.Warn("reply could not be published, answered with an error", "request_id", requestID, "size", MessageSize(reply), "label", e.Label, "err", err)
			return
		}
		err = errors.Join(err, ferr)
	}
	l.log.Warn("reply lost: publishing it failed", "request_id", requestID, "reply_subject", reply.Subject, "size", MessageSize(reply), "err", err)
}

// smallReply is the size up to which a reply whose publish failed is not
// replaced by an error reply (which would not be smaller, and would fail
// the same way).
const smallReply = 4 << 10

// Shutdown stops taking requests, lets the pending and running ones finish
// and publishes their replies, and returns when they have or ctx ends
// (cancel Listen's context to stop the handlers still running then).
func (l *Loop) Shutdown(ctx context.Context) error {
	l.unregister()
	l.mu.Lock()
	l.stopping = true
	sub := l.sub
	l.mu.Unlock()
	// A subscription drained by a lame-duck move is no longer valid.
	if err := sub.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		return fmt.Errorf("shutdown %s: drain: %w", l.cfg.Subject, err)
	}
	done := make(chan struct{})
	go func() {
		for sub.IsValid() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		// Ends once the handlers have: when ctx ends first, once the
		// owner cancels Listen's context.
		l.wg.Wait()
		close(done)
	}()
	// Queued replies go out either way; a handler that finishes later
	// publishes its reply directly.
	defer l.out.Close()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shutdown %s: %w", l.cfg.Subject, ctx.Err())
	}
}
