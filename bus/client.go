package bus

import (
	"bytes"
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/tracing"
)

// DefaultTimeout bounds a call whose context has no deadline.
const DefaultTimeout = 10 * time.Second

// Client makes federated calls from a local component: it publishes a
// contract request to fed.out.<component>.<rpc>.<target> and waits for the
// federator's reply.
type Client struct {
	d        Doer
	subjects contract.Subjects
	source   string
	// Timeout bounds calls whose context has no deadline (DefaultTimeout);
	// 0 leaves such calls unbounded.
	Timeout time.Duration
	// Objects reads the answers that arrive as objects of the object
	// store (contract section 8). When nil, the client makes one on the
	// connection it sends through (a *nats.Conn, or a Requester's) at the
	// first such answer.
	Objects *Objects

	objects lazyObjects // when Objects is nil
}

// NewClient returns a client that sends its requests through d with the
// given subjects: a *nats.Conn (each request published and flushed on its
// own) or a *Requester (the requests of concurrent calls published in
// batches). source is the CloudEvents source of its requests, e.g.
// "/brig".
func NewClient(d Doer, subjects contract.Subjects, source string) *Client {
	return &Client{d: d, subjects: subjects, source: source, Timeout: DefaultTimeout, objects: lazyObjects{nc: connOf(d)}}
}

// CallOption sets an optional part of a request.
type CallOption func(*Event)

// WithID sets the request's ce-id (a new unique one by default).
func WithID(id string) CallOption { return func(e *Event) { e.ID = id } }

// WithTraceParent continues a W3C trace (ce-traceparent).
func WithTraceParent(tp string) CallOption { return func(e *Event) { e.TraceParent = tp } }

// Call sends body to rpc of component on the backend of targetDomain and
// returns the remote response body, or a *contract.Error. A body that
// arrives as an object of the object store is read whole into memory (and
// the object deleted): use CallStream for large bodies.
func (c *Client) Call(ctx context.Context, targetDomain, component, rpc string, body []byte, opts ...CallOption) ([]byte, error) {
	ev, err := c.call(ctx, targetDomain, component, rpc, body, opts)
	if err != nil {
		return nil, err
	}
	if ev.Object.IsZero() {
		return ev.Data, nil
	}
	b, err := c.objectBody(ctx, ev)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	out := make([]byte, 0, b.Size)
	w := bytes.NewBuffer(out)
	if _, err := b.WriteTo(w); err != nil {
		return nil, contract.AsError(err)
	}
	return w.Bytes(), nil
}

// call sends the request and returns the fedbus.response event, or the
// contract error.
func (c *Client) call(ctx context.Context, targetDomain, component, rpc string, body []byte, opts []CallOption) (Event, error) {
	subject, err := c.subjects.Out(component, rpc, targetDomain)
	if err != nil {
		return Event{}, err
	}
	if _, ok := ctx.Deadline(); !ok && c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	ev := Event{Source: c.source, Type: contract.TypeRequest, Data: body}
	for _, o := range opts {
		o(&ev)
	}
	if ev.ID == "" {
		ev.ID = NewID()
	}
	var span tracing.Span
	if tracing.On() { // off: no span name or attributes made
		ctx, span = tracing.Start(ctx, "fedbus.call "+component+"."+rpc, trace.SpanKindClient, ev.TraceParent,
			tracing.AttrComponent.String(component), tracing.AttrRPC.String(rpc), tracing.AttrDomain.String(targetDomain), tracing.AttrRequestID.String(ev.ID))
	}
	// The caller's span (fedbus's, or the component's own OpenTelemetry
	// span) continues in the request.
	ev.TraceParent = tracing.TraceParent(ctx, ev.TraceParent)
	if dl, ok := ctx.Deadline(); ok {
		ev.TimeoutMs = max(time.Until(dl).Milliseconds(), 1)
	}
	out, err := ExchangeEvent(ctx, c.d, ev.Message(subject))
	span.End(err, labelOf(err))
	return out, err
}

// labelOf returns the contract label of a call's error ("" for nil).
func labelOf(err error) string {
	if err == nil {
		return ""
	}
	return contract.AsError(err).Label
}

// ErrNotConnected is the error of a request made while the NATS
// connection is down (reconnecting): nothing could answer it.
var ErrNotConnected = errors.New("NATS is not connected")

// connected is what Exchange asks of a Doer that knows its connection's
// state (*nats.Conn and *Requester do).
type connected interface{ IsConnected() bool }

// Exchange sends a request message and decodes the reply: the body of a
// fedbus.response, or the *Error of a fedbus.error. NATS failures map to the
// contract: no responders is component-unavailable, a deadline is
// federation-timeout. While the connection is down the request is not
// sent: it fails at once with component-unavailable rather than waiting
// for its deadline. A response whose body is an object (Event.Object) has
// no data: use ExchangeEvent to see it.
func Exchange(ctx context.Context, d Doer, msg *nats.Msg) ([]byte, error) {
	ev, err := ExchangeEvent(ctx, d, msg)
	if err != nil {
		return nil, err
	}
	return ev.Data, nil
}

// ExchangeEvent is Exchange returning the whole fedbus.response event.
func ExchangeEvent(ctx context.Context, d Doer, msg *nats.Msg) (Event, error) {
	if c, ok := d.(connected); ok && !c.IsConnected() {
		return Event{}, NATSError(msg.Subject, ErrNotConnected)
	}
	reply, err := d.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return Event{}, NATSError(msg.Subject, err)
	}
	ev, err := Decode(reply)
	if err != nil {
		return Event{}, contract.Errorf(contract.LabelServerError, "reply on %s is not a CloudEvent: %v", msg.Subject, err)
	}
	if ev.Type == contract.TypeError {
		return Event{}, contract.ParseError(contract.StatusOf(contract.LabelServerError), ev.Data)
	}
	return ev, nil
}

// NATSError maps an error of a NATS request-reply on subject to the
// contract's error: no responders is component-unavailable, a deadline or
// cancellation federation-timeout, a request larger than the server's max
// payload payload-too-large, any other failure to publish (a closed
// connection, a full reconnect buffer) component-unavailable.
func NATSError(subject string, err error) *contract.Error {
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return contract.Errorf(contract.LabelPayloadTooLarge, "the request on %s is larger than the NATS server carries (max_payload): %v", subject, err)
	case errors.Is(err, nats.ErrNoResponders):
		return contract.Errorf(contract.LabelComponentUnavailable, "nothing serves %s", subject)
	case errors.Is(err, ErrNotConnected):
		return contract.Errorf(contract.LabelComponentUnavailable, "nothing can serve %s: NATS is not connected (reconnecting)", subject)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return contract.Errorf(contract.LabelTimeout, "no reply on %s in time", subject)
	case errors.Is(err, context.Canceled):
		return contract.Errorf(contract.LabelTimeout, "request on %s cancelled", subject)
	default:
		return contract.Errorf(contract.LabelComponentUnavailable, "request on %s: %v", subject, err)
	}
}
