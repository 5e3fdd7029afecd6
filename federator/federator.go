package federator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/tlsconf"
)

// ErrNotStarted is returned by Shutdown before Start.
var ErrNotStarted = errors.New("federator not started")

// Deps are the shared services a Federator uses.
type Deps struct {
	NATS     *nats.Conn
	Resolver *discovery.Resolver
	Policy   *policy.Policy
	Certs    *tlsconf.Store
	Logger   *slog.Logger
	// Hook, when set, is told of each step of a request (used by the demo
	// to print the hops). It must be fast and safe for concurrent use.
	Hook func(requestID, step string)
	// Now is the clock of the backoff after a remote's 429 (its
	// Retry-After); nil means time.Now. Tests use a fake clock. It must
	// be safe for concurrent use.
	Now func() time.Time
}

// Federator is one outbound worker process.
type Federator struct {
	cfg        Config
	deps       Deps
	subjects   contract.Subjects
	components []string
	log        *slog.Logger
	source     string
	remote     *remoteClient
	perRemote  *remoteLimiter
	sub        *nats.Subscription
	out        *bus.Outbox // replies, batched (nil until Start)
	sem        chan struct{}
	wg         sync.WaitGroup
}

// New builds a federator; Start subscribes it.
func New(cfg Config, deps Deps) (*Federator, error) {
	subjects, err := contract.NewSubjects(cfg.SubjectPrefix)
	if err != nil {
		return nil, fmt.Errorf("new federator: %w", err)
	}
	if deps.NATS == nil || deps.Resolver == nil || deps.Policy == nil || deps.Certs == nil {
		return nil, fmt.Errorf("new federator: NATS, Resolver, Policy and Certs are required")
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	log := deps.Logger.With("component", "federator", "domain", cfg.Domain)
	return &Federator{
		cfg: cfg, deps: deps, subjects: subjects,
		components: slices.Clone(cfg.Components),
		log:        log,
		source:     contract.ServiceSource(cfg.Domain, "federator"),
		remote:     newRemoteClient(cfg, deps.Resolver, deps.Certs, deps.Now),
		perRemote:  newRemoteLimiter(cfg.MaxPerRemote),
		sem:        make(chan struct{}, cfg.MaxInFlight),
	}, nil
}

// Start subscribes to fed.out.> in the queue group "federator". Request
// handling derives its contexts from ctx: cancelling it aborts requests in
// flight (each still gets its reply, federation-timeout).
func (f *Federator) Start(ctx context.Context) error {
	subject := f.subjects.OutAll()
	f.out = bus.NewOutbox(f.deps.NATS, f.log)
	sub, err := f.deps.NATS.QueueSubscribe(subject, contract.FederatorQueueGroup, func(msg *nats.Msg) {
		f.sem <- struct{}{}
		f.wg.Add(1)
		go func() {
			defer func() { <-f.sem; f.wg.Done() }()
			f.handle(ctx, msg)
		}()
	})
	if err != nil {
		f.out.Close()
		return fmt.Errorf("start federator: subscribe %s: %w", subject, err)
	}
	if err := sub.SetPendingLimits(-1, 256<<20); err != nil {
		_ = sub.Unsubscribe()
		f.out.Close()
		return fmt.Errorf("start federator: pending limits: %w", err)
	}
	// Make sure the server has the subscription before we report ready.
	if err := f.deps.NATS.Flush(); err != nil {
		_ = sub.Unsubscribe()
		f.out.Close()
		return fmt.Errorf("start federator: flush: %w", err)
	}
	f.sub = sub
	f.log.Info("federator started", "subject", subject, "queue", contract.FederatorQueueGroup)
	return nil
}

// Shutdown stops taking requests, finishes the ones in flight (bounded by
// ctx) and closes idle connections.
func (f *Federator) Shutdown(ctx context.Context) error {
	if f.sub == nil {
		return ErrNotStarted
	}
	if err := f.sub.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("shutdown federator: drain: %w", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for f.sub.IsValid() && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		f.wg.Wait()
	}()
	defer f.remote.closeIdle()
	// Queued replies go out either way; a request that finishes later
	// publishes its reply directly.
	defer f.out.Close()
	select {
	case <-done:
		f.log.Info("federator stopped")
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shutdown federator: %w", ctx.Err())
	}
}

// handle serves one request and replies exactly once.
func (f *Federator) handle(ctx context.Context, msg *nats.Msg) {
	structured := bus.WantsStructured(msg)
	if msg.Reply == "" {
		f.log.Warn("request without reply subject dropped", "subject", msg.Subject)
		return
	}
	ev, err := bus.Decode(msg)
	if err != nil {
		f.reply(msg, bus.ErrorReply(structured, f.source, contract.AsError(err)), "")
		return
	}
	// No per-request logger on the hot path: the request id is added to
	// the lines that are written.
	body, err := f.call(ctx, msg.Subject, ev)
	if err != nil {
		e := contract.AsError(err)
		f.log.Info("request failed", "request_id", ev.ID, "subject", msg.Subject, "label", e.Label, "err", e.Message)
		f.reply(msg, bus.ErrorReply(ev.Structured, f.source, e), ev.ID)
		return
	}
	f.reply(msg, bus.Reply(ev, f.source, body), ev.ID)
}

// SetMaxPerRemote changes the per-remote limit of requests in flight (0: no
// limit) at run time.
func (f *Federator) SetMaxPerRemote(n int) {
	f.perRemote.max.Store(int64(n))
}

// call validates the request and performs it; errors are *contract.Error.
func (f *Federator) call(ctx context.Context, subject string, ev bus.Event) ([]byte, error) {
	route, err := f.subjects.ParseOut(subject)
	if err != nil {
		return nil, err
	}
	if f.deps.Hook != nil {
		f.deps.Hook(ev.ID, "federator: request for "+route.Component+"."+route.RPC+" on "+route.Domain+": component allowed, "+route.Domain+" on the allow list")
	}
	if !slices.Contains(f.components, route.Component) {
		return nil, contract.Errorf(contract.LabelUnknownComponent, "component %s is not federated (FED_COMPONENTS)", route.Component)
	}
	if err := f.deps.Policy.Check(route.Domain); err != nil {
		return nil, err
	}
	if until, ok := f.remote.backoff.check(route.Domain); ok {
		// The remote's own limit, reported by its 429: nothing is sent
		// (not even a DNS query) until its Retry-After ends.
		return nil, contract.Errorf(contract.LabelTooManyRequests, "%s asked us to wait (429 with Retry-After): requests to it are not sent until %s",
			route.Domain, until.UTC().Format(backoffTimeFormat))
	}
	if !f.perRemote.acquire(route.Domain) {
		return nil, contract.Errorf(contract.LabelTooManyRequests, "%d requests to %s are in flight already (FED_MAX_IN_FLIGHT_PER_REMOTE)", f.perRemote.max.Load(), route.Domain)
	}
	defer f.perRemote.release(route.Domain)
	timeout := f.cfg.RequestTimeout
	if ev.TimeoutMs > 0 {
		timeout = min(timeout, time.Duration(ev.TimeoutMs)*time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var step func(string)
	if f.deps.Hook != nil {
		step = func(s string) { f.deps.Hook(ev.ID, s) }
	}
	return f.remote.do(ctx, route, ev, step, f.log)
}

// backoffTimeFormat is RFC 3339 in milliseconds: how a too-many-requests
// message says until when a remote asked us to wait.
const backoffTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// reply queues the reply on the federator's Outbox (batched with the
// replies of the other requests finishing now).
func (f *Federator) reply(msg *nats.Msg, ev bus.Event, requestID string) {
	f.out.Publish(ev.Message(msg.Reply), requestID)
}
