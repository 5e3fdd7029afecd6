package federator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/metrics"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/tlsconf"
	"github.com/fedbus/fedbus/tracing"
)

// ErrNotStarted is returned by Shutdown before Start.
var ErrNotStarted = errors.New("federator not started")

// Deps are the shared services a Federator uses. The Federator does not
// own them: the caller closes them after Shutdown.
type Deps struct {
	NATS *nats.Conn
	// Objects is the object store of the answers that do not travel
	// inline (contract section 8; setup.Shared has it). Without it such
	// answers fail with server-error.
	Objects *bus.Objects
	// JetStream, when set, enables the delivery of notifications (section
	// 6): the federator creates their streams and buckets at start (in the
	// background, retrying while JetStream is unavailable).
	JetStream jetstream.JetStream
	Resolver  *discovery.Resolver
	Policy    *policy.Policy
	Certs     *tlsconf.Store
	// Logger receives the federator's logs (required).
	Logger *slog.Logger
	// Hook, when set, is told of each step of a request (used by the demo
	// to print the hops). It must be fast and safe for concurrent use.
	Hook func(requestID, step string)
	// Metrics, when set, records the requests (nil: none).
	Metrics *metrics.Metrics
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
	domain     string // FED_DOMAIN, normalised
	log        *slog.Logger
	source     string
	now        func() time.Time
	client     *remoteClient
	remotes    *remotes
	loop       *bus.Loop // nil until Start
	metrics    *metrics.Metrics
	status     *statusTracker
	notify     *notifier // nil without JetStream
}

// New builds a federator; Start subscribes it. cfg starts from NewConfig;
// New refuses invalid worker settings (the binary validates the whole
// configuration first).
func New(cfg Config, deps Deps) (*Federator, error) {
	if err := errors.Join(cfg.ValidateServing(), cfg.validateWorker()); err != nil {
		return nil, fmt.Errorf("new federator: %w", err)
	}
	subjects, err := contract.NewSubjects(cfg.SubjectPrefix)
	if err != nil {
		return nil, fmt.Errorf("new federator: %w", err)
	}
	if deps.NATS == nil || deps.Resolver == nil || deps.Policy == nil || deps.Certs == nil || deps.Logger == nil {
		return nil, fmt.Errorf("new federator: NATS, Resolver, Policy, Certs and Logger are required")
	}
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	domain, err := contract.NormalizeDomain(cfg.Domain)
	if err != nil {
		return nil, fmt.Errorf("new federator: FED_DOMAIN: %w", err)
	}
	log := deps.Logger.With("component", "federator", "domain", domain)
	// A remote's answer travels inline when it fits in one NATS message
	// with the reply's headers; a larger one goes to the object store
	// (object.go).
	if limit, clamped := bus.ClampBody(deps.NATS, cfg.MaxResponseBytes); clamped {
		log.Info("FED_MAX_RESPONSE_BYTES lowered to what the NATS server carries",
			"configured", cfg.MaxResponseBytes, "max_response_bytes", limit,
			"nats_max_payload", deps.NATS.MaxPayload(), "header_room", bus.HeaderRoom)
		cfg.MaxResponseBytes = limit
	}
	client := newRemoteClient(domain, cfg, deps.Resolver, deps.Certs, now, deps.Metrics)
	client.objects = deps.Objects
	rs := newRemotes(cfg.MaxPerRemote, cfg.RemoteDownAfter, maxRecords, now)
	return &Federator{
		cfg: cfg, deps: deps, subjects: subjects, domain: domain,
		status:     newStatusTracker(deps.NATS, subjects, contract.ServiceSource(domain, "federator"), rs, log, deps.Metrics, now),
		components: slices.Clone(cfg.Components),
		log:        log,
		source:     contract.ServiceSource(domain, "federator"),
		now:        now,
		client:     client,
		remotes:    rs,
		metrics:    deps.Metrics,
	}, nil
}

// Start subscribes to fed.out.> in the queue group "federator". Request
// handling derives its contexts from ctx: cancelling it aborts requests in
// flight (each still gets its reply, federation-timeout).
func (f *Federator) Start(ctx context.Context) error {
	loop, err := bus.Listen(ctx, f.deps.NATS, bus.LoopConfig{
		Subject: f.subjects.OutAll(), Queue: contract.FederatorQueueGroup,
		MaxInFlight: f.cfg.MaxInFlight, PendingBytes: 256 << 20,
		Source: f.source, Logger: f.log,
	}, f.handle)
	if err != nil {
		return fmt.Errorf("start federator: %w", err)
	}
	f.loop = loop
	f.status.start(ctx, f.cfg.StatusBucket, f.cfg.JetStreamReplicas)
	f.metrics.AddPending(f.subjects.OutAll(), loop.PendingBytes)
	if f.deps.JetStream != nil {
		f.notify = newNotifier(f, f.deps.JetStream)
		f.notify.start(ctx)
	}
	f.log.Info("federator started", "subject", f.subjects.OutAll(), "queue", contract.FederatorQueueGroup, "notifications", f.notify != nil)
	f.ensureBucket(ctx)
	return nil
}

// Shutdown stops taking requests, finishes the ones in flight (bounded by
// ctx) and closes idle connections.
func (f *Federator) Shutdown(ctx context.Context) error {
	if f.loop == nil {
		return ErrNotStarted
	}
	defer f.client.closeIdle()
	f.metrics.AddPending(f.subjects.OutAll(), nil)
	defer f.status.stop()
	var nerr error
	if f.notify != nil {
		nerr = f.notify.shutdown(ctx)
	}
	if err := f.loop.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown federator: %w", errors.Join(err, nerr))
	}
	if nerr != nil {
		return fmt.Errorf("shutdown federator: %w", nerr)
	}
	f.log.Info("federator stopped")
	return nil
}

// handle serves one request: it returns the reply.
func (f *Federator) handle(ctx context.Context, subject string, ev bus.Event) bus.Event {
	// No per-request logger on the hot path: the request id is added to
	// the lines that are written.
	start := time.Now()
	route, err := f.subjects.ParseOut(subject)
	var a *answer
	if err != nil {
		err = f.refuse(err)
	} else {
		var span tracing.Span
		if tracing.On() { // off: no span name or attributes made
			ctx, span = tracing.Start(ctx, "federator "+route.Component+"."+route.RPC, trace.SpanKindServer, ev.TraceParent,
				tracing.AttrComponent.String(route.Component), tracing.AttrRPC.String(route.RPC), tracing.AttrDomain.String(route.Domain), tracing.AttrRequestID.String(ev.ID))
		}
		a, err = f.call(ctx, route, ev)
		span.End(err, labelOf(err))
	}
	// Every request counts, refused ones included (their domain and
	// component folded when unknown).
	f.metrics.Out(route.Domain, route.Component, err, time.Since(start))
	if err != nil {
		e := contract.AsError(err)
		if e.Inner != nil { // the remote's own error: its label says why
			f.log.Info("request failed", "request_id", ev.ID, "subject", subject, "label", e.Label, "err", e.Message,
				"remote_label", e.Inner.Label, "remote_err", e.Inner.Message)
		} else {
			f.log.Info("request failed", "request_id", ev.ID, "subject", subject, "label", e.Label, "err", e.Message)
		}
		return bus.ErrorReply(ev.Structured, f.source, e)
	}
	return a.reply(ev, f.source)
}

// observe feeds the outcome of an exchange with r's remote (a request or
// a notification delivery, started at start, that reached discovery or
// the network; id names it in the logs) to its record, and tells a change
// of the remote's reachability (status.go).
func (f *Federator) observe(r *remote, start time.Time, err error, id string) {
	f.status.observe(f.remotes.outcome(r, start, err), r.domain, start, id)
}

// labelOf returns the contract label of err ("" for nil).
func labelOf(err error) string {
	if err == nil {
		return ""
	}
	return contract.AsError(err).Label
}

// Endpoints are the federator's serve loop as NATS service discovery shows
// it (setup.Announce): its counts, and this worker's per-remote records as
// the endpoint's data (fedctl remotes status reads them). Call after Start.
func (f *Federator) Endpoints() []bus.ServiceEndpoint {
	return []bus.ServiceEndpoint{{
		Name: EndpointName, Subject: f.subjects.OutAll(), Queue: contract.FederatorQueueGroup,
		Stats: f.loop.Stats,
		Data:  func() any { return f.Remotes() },
	}}
}

// EndpointName is the name of the federator's endpoint in NATS service
// discovery.
const EndpointName = "outbound"

// Remotes returns what this worker knows of the remotes it exchanged
// with recently (requests and notification deliveries), from their
// records, the most recent first: last success, last failure, requests in
// flight (the data of its NATS micro service stats, which fedctl remotes
// status reads).
func (f *Federator) Remotes() []RemoteRecord {
	return f.remotes.records(maxStatsRemotes)
}

// SetMaxPerRemote changes the per-remote limit of requests in flight (0: no
// limit) at run time.
func (f *Federator) SetMaxPerRemote(n int) {
	f.remotes.maxPerRemote.Store(int64(n))
}

// call validates the request and performs it; errors are *contract.Error.
// A request refused by this worker's own checks is counted as a refusal.
func (f *Federator) call(ctx context.Context, route contract.Route, ev bus.Event) (*answer, error) {
	if !slices.Contains(f.components, route.Component) {
		return nil, f.refuse(contract.Errorf(contract.LabelUnknownComponent, "component %s is not federated (FED_COMPONENTS)", route.Component))
	}
	if route.Domain == f.domain && !f.cfg.AllowSelfCalls {
		// Federation is between backends: a call to ourselves would come
		// back in through our own ingress as a remote's.
		return nil, f.refuse(contract.Errorf(contract.LabelFederationDenied, "%s is this backend's own domain (FED_DOMAIN): calls to it are refused (FED_ALLOW_SELF_CALLS)", route.Domain))
	}
	if err := f.deps.Policy.Check(route.Domain); err != nil {
		return nil, f.refuse(err)
	}
	if f.deps.Hook != nil {
		f.deps.Hook(ev.ID, "federator: request for "+route.Component+"."+route.RPC+" on "+route.Domain+": component federated, "+route.Domain+" allowed")
	}
	rec, cerr := f.remotes.acquire(route.Domain)
	if cerr != nil {
		return nil, f.refuse(cerr)
	}
	defer f.remotes.release(rec)
	f.metrics.InFlight(metrics.Outbound, route.Domain, 1)
	defer f.metrics.InFlight(metrics.Outbound, route.Domain, -1)
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
	sent := f.now()
	a, err := f.client.do(ctx, route, ev, step, f.log)
	if err == nil && f.notify != nil {
		f.notify.reachable(route.Domain)
	}
	f.observe(rec, sent, err, ev.ID)
	var tm *tooManyError
	if errors.As(err, &tm) && tm.wait > 0 {
		until := f.now().Add(tm.wait)
		f.remotes.wait(route.Domain, until)
		f.log.Warn("remote answered 429: requests to it fail here until its Retry-After ends",
			"request_id", ev.ID, "remote", route.Domain, "retry_after", tm.wait.String(), "until", until.UTC().Format(backoffTimeFormat))
	}
	return a, err
}

// refuse counts a request refused by this worker's own checks and returns
// its error.
func (f *Federator) refuse(err error) error {
	f.metrics.Refused(metrics.Outbound, labelOf(err))
	return err
}
