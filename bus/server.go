package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/fedbus/fedbus/contract"
	"github.com/nats-io/nats.go"
)

// Request is an inbound federated request as a component's handler sees it.
type Request struct {
	ID          string
	Origin      string // verified origin domain (set by the ingress)
	Component   string
	RPC         string
	TraceParent string
	Body        []byte
}

// Handler serves one inbound request. Returning a *Error replies with that
// contract error; any other error replies server-error (500).
type Handler func(ctx context.Context, req *Request) ([]byte, error)

// DefaultMaxInFlight bounds concurrent handlers per Server.
const DefaultMaxInFlight = 512

// Server serves a component's inbound federated RPCs: it subscribes to
// fed.in.<component>.> in the queue group <component>.
type Server struct {
	subjects  contract.Subjects
	component string
	source    string // CloudEvents source of the replies: /<component>
	handler   Handler
	log       *slog.Logger
	sub       *nats.Subscription
	out       *Outbox
	sem       chan struct{}
	wg        sync.WaitGroup
}

// Serve subscribes handler for component on nc. Handlers run concurrently,
// at most DefaultMaxInFlight at once; their contexts derive from ctx, so
// cancelling ctx cancels running handlers (Shutdown stops new ones).
func Serve(ctx context.Context, nc *nats.Conn, subjects contract.Subjects, component string, handler Handler, logger *slog.Logger) (*Server, error) {
	subject, err := subjects.InComponent(component)
	if err != nil {
		return nil, fmt.Errorf("serve %s: %w", component, err)
	}
	if logger == nil {
		logger = slog.Default()
	}
	s := &Server{
		subjects: subjects, component: component, handler: handler, source: contract.ComponentSource(component),
		log: logger.With("component", component),
		sem: make(chan struct{}, DefaultMaxInFlight),
	}
	s.out = NewOutbox(nc, s.log)
	sub, err := nc.QueueSubscribe(subject, component, func(msg *nats.Msg) { s.onMsg(ctx, msg) })
	if err != nil {
		s.out.Close()
		return nil, fmt.Errorf("serve %s: subscribe %s: %w", component, subject, err)
	}
	s.sub = sub
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		s.stop()
		return nil, fmt.Errorf("serve %s: pending limits: %w", component, err)
	}
	if err := nc.Flush(); err != nil {
		s.stop()
		return nil, fmt.Errorf("serve %s: flush: %w", component, err)
	}
	return s, nil
}

func (s *Server) onMsg(ctx context.Context, msg *nats.Msg) {
	s.sem <- struct{}{}
	s.wg.Add(1)
	go func() {
		defer func() { <-s.sem; s.wg.Done() }()
		s.handle(ctx, msg)
	}()
}

func (s *Server) handle(ctx context.Context, msg *nats.Msg) {
	source := s.source
	structured := WantsStructured(msg)
	if msg.Reply == "" {
		s.log.Warn("request without reply subject dropped", "subject", msg.Subject)
		return
	}
	ev, err := Decode(msg)
	if err != nil {
		s.respond(msg, ErrorReply(structured, source, contract.AsError(err)))
		return
	}
	route, err := s.subjects.ParseIn(msg.Subject)
	if err != nil {
		s.respond(msg, ErrorReply(structured, source, contract.AsError(err)))
		return
	}
	origin := route.Domain
	if ev.OriginDomain != "" && ev.OriginDomain != origin {
		s.respond(msg, ErrorReply(structured, source, contract.Errorf(contract.LabelNoOriginDomain, "origin header %q disagrees with subject", contract.Truncate(ev.OriginDomain, 64))))
		return
	}
	if ev.TimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(ev.TimeoutMs)*time.Millisecond)
		defer cancel()
	}
	req := &Request{ID: ev.ID, Origin: origin, Component: route.Component, RPC: route.RPC, TraceParent: ev.TraceParent, Body: ev.Data}
	body, err := s.handler(ctx, req)
	if err != nil {
		s.log.Info("handler failed", "request_id", ev.ID, "rpc", route.RPC, "origin", origin, "err", err)
		s.respond(msg, ErrorReply(ev.Structured, source, contract.AsError(err)))
		return
	}
	s.respond(msg, Reply(ev, source, body))
}

// respond queues the reply on the server's Outbox (batched with the other
// handlers' replies).
func (s *Server) respond(msg *nats.Msg, ev Event) {
	s.out.Publish(ev.Message(msg.Reply), ev.ID)
}

// stop undoes a Serve that failed half way.
func (s *Server) stop() {
	_ = s.sub.Unsubscribe()
	s.out.Close()
}

// Shutdown stops taking requests, lets the pending and running ones finish,
// and returns when they have or ctx ends (cancel Serve's context to stop
// the handlers still running then).
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.sub.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("shutdown %s: drain: %w", s.component, err)
	}
	done := make(chan struct{})
	go func() {
		for s.sub.IsValid() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
		s.wg.Wait()
		close(done)
	}()
	// Queued replies go out either way; a handler that finishes later
	// publishes its reply directly.
	defer s.out.Close()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("shutdown %s: %w", s.component, ctx.Err())
	}
}
