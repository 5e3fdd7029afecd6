package bus

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/tracing"
)

// Request is an inbound federated request as a component's handler sees it.
type Request struct {
	ID          string
	Origin      string // verified origin domain (set by the ingress)
	Component   string
	RPC         string
	TraceParent string
	Body        []byte

	objects *lazyObjects // the server's, for ReplyStream
	answer  *streamed    // set by ReplyStream or ReplyObject
}

// Handler serves one inbound request. Returning a *contract.Error replies
// with that contract error; any other error replies server-error (500).
type Handler func(ctx context.Context, req *Request) ([]byte, error)

// Server serves a component's inbound federated RPCs: it subscribes to
// fed.in.<component>.> in the queue group <component>, on a Loop.
type Server struct {
	*Loop
	subjects  contract.Subjects
	component string
	source    string // CloudEvents source of the replies: /<component>
	handler   Handler
	log       *slog.Logger
	objects   lazyObjects
}

// Serve subscribes handler for component on nc. Handlers run concurrently,
// at most DefaultMaxInFlight at once; their contexts derive from ctx, so
// cancelling ctx cancels running handlers (Shutdown stops new ones).
func Serve(ctx context.Context, nc *nats.Conn, subjects contract.Subjects, component string, handler Handler, logger *slog.Logger, opts ...ServeOption) (*Server, error) {
	subject, err := subjects.InComponent(component)
	if err != nil {
		return nil, fmt.Errorf("serve %s: %w", component, err)
	}
	if logger == nil {
		return nil, fmt.Errorf("serve %s: %w", component, ErrNoLogger)
	}
	s := &Server{subjects: subjects, component: component, handler: handler, source: contract.ComponentSource(component),
		log: logger.With("component", component)}
	s.objects.nc = nc
	for _, o := range opts {
		o(s)
	}
	s.Loop, err = Listen(ctx, nc, LoopConfig{Subject: subject, Queue: component, Source: s.source, Logger: s.log}, s.handle)
	if err != nil {
		return nil, fmt.Errorf("serve %s: %w", component, err)
	}
	return s, nil
}

// handle turns one inbound request into a handler call.
func (s *Server) handle(ctx context.Context, subject string, ev Event) Event {
	route, err := s.subjects.ParseIn(subject)
	if err != nil {
		return ErrorReply(ev.Structured, s.source, contract.AsError(err))
	}
	origin := route.Domain
	if ev.OriginDomain != "" && ev.OriginDomain != origin {
		return ErrorReply(ev.Structured, s.source, contract.Errorf(contract.LabelNoOriginDomain, "origin header %q disagrees with subject", contract.Truncate(ev.OriginDomain, 64)))
	}
	if ev.TimeoutMs > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(ev.TimeoutMs)*time.Millisecond)
		defer cancel()
	}
	var span tracing.Span
	if tracing.On() { // off: no span name or attributes made
		ctx, span = tracing.Start(ctx, "fedbus.handle "+route.Component+"."+route.RPC, trace.SpanKindServer, ev.TraceParent,
			tracing.AttrComponent.String(route.Component), tracing.AttrRPC.String(route.RPC), tracing.AttrDomain.String(origin), tracing.AttrRequestID.String(ev.ID))
	}
	req := &Request{ID: ev.ID, Origin: origin, Component: route.Component, RPC: route.RPC, TraceParent: tracing.TraceParent(ctx, ev.TraceParent), Body: ev.Data, objects: &s.objects}
	body, err := s.handler(ctx, req)
	span.End(err, labelOf(err))
	if err != nil {
		s.log.Info("handler failed", "request_id", ev.ID, "rpc", route.RPC, "origin", origin, "err", err)
		if req.answer != nil && req.answer.owned {
			s.dropObject(ctx, ev.ID, req.answer.ref)
		}
		return ErrorReply(ev.Structured, s.source, contract.AsError(err))
	}
	if req.answer != nil {
		return ObjectReply(ev, s.source, req.answer.contentType, req.answer.ref)
	}
	return Reply(ev, s.source, body)
}

// dropObject deletes an object that was stored for an answer the handler
// then did not give.
func (s *Server) dropObject(ctx context.Context, requestID string, ref ObjectRef) {
	objs, err := s.objects.get()
	if err == nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		err = objs.Delete(dctx, ref)
	}
	if err != nil {
		s.log.Info("deleting an unused answer object failed (it expires)", "request_id", requestID, "object", ref.String(), "err", err)
	}
}
