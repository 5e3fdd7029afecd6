package bus

import (
	"context"
	"errors"
	"time"

	"github.com/fedbus/fedbus/contract"
	"github.com/nats-io/nats.go"
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
}

// NewClient returns a client that publishes on nc with the given subjects;
// source is the CloudEvents source of its requests, e.g. "/brig".
func NewClient(nc *nats.Conn, subjects contract.Subjects, source string) *Client {
	return NewClientVia(nc, subjects, source)
}

// NewClientVia is NewClient sending its requests through d, e.g. a
// *Requester, which publishes the requests of concurrent calls in batches.
func NewClientVia(d Doer, subjects contract.Subjects, source string) *Client {
	return &Client{d: d, subjects: subjects, source: source, Timeout: DefaultTimeout}
}

// CallOptions are the optional parts of a request.
type CallOptions struct {
	ID          string // ce-id; a new one when empty
	TraceParent string
}

// Call sends body to rpc of component on the backend of targetDomain and
// returns the remote response body, or a *Error of the contract.
func (c *Client) Call(ctx context.Context, targetDomain, component, rpc string, body []byte) ([]byte, error) {
	return c.CallWith(ctx, targetDomain, component, rpc, body, CallOptions{})
}

// CallWith is Call with options.
func (c *Client) CallWith(ctx context.Context, targetDomain, component, rpc string, body []byte, opts CallOptions) ([]byte, error) {
	subject, err := c.subjects.Out(component, rpc, targetDomain)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok && c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	ev := Event{ID: opts.ID, Source: c.source, Type: contract.TypeRequest, TraceParent: opts.TraceParent, Data: body}
	if ev.ID == "" {
		ev.ID = NewID()
	}
	if dl, ok := ctx.Deadline(); ok {
		ev.TimeoutMs = max(time.Until(dl).Milliseconds(), 1)
	}
	return Exchange(ctx, c.d, ev.Message(subject))
}

// Exchange sends a request message and decodes the reply: the body of a
// fedbus.response, or the *Error of a fedbus.error. NATS failures map to the
// contract: no responders is component-unavailable, a deadline is
// federation-timeout.
func Exchange(ctx context.Context, d Doer, msg *nats.Msg) ([]byte, error) {
	reply, err := d.RequestMsgWithContext(ctx, msg)
	if err != nil {
		return nil, natsError(msg.Subject, err)
	}
	ev, err := Decode(reply)
	if err != nil {
		return nil, contract.Errorf(contract.LabelServerError, "reply on %s is not a CloudEvent: %v", msg.Subject, err)
	}
	if ev.Type == contract.TypeError {
		e := contract.ParseError(contract.StatusOf(contract.LabelServerError), ev.Data)
		return nil, e
	}
	return ev.Data, nil
}

// natsError maps a NATS request error to a contract error.
func natsError(subject string, err error) *contract.Error {
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return contract.Errorf(contract.LabelComponentUnavailable, "nothing serves %s", subject)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return contract.Errorf(contract.LabelTimeout, "no reply on %s in time", subject)
	case errors.Is(err, context.Canceled):
		return contract.Errorf(contract.LabelTimeout, "request on %s cancelled", subject)
	default:
		return contract.Errorf(contract.LabelComponentUnavailable, "request on %s: %v", subject, err)
	}
}

// NATSError maps an error of a NATS request-reply to the contract's error;
// it is exported for the federator and ingress, which make the same calls.
func NATSError(subject string, err error) *contract.Error { return natsError(subject, err) }
