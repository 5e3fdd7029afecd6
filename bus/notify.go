package bus

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/contract"
)

// JetStream API error codes that Notify maps to the contract's errors.
const (
	jsErrStoreFailed  = 10077 // a stream limit (bytes, messages) refused the message
	jsErrInsufficient = 10023 // the server's JetStream resources are exhausted
	jsErrMsgTooLarge  = 10054 // larger than the stream's max message size
)

// Notifier publishes a component's notifications (contract section 6): one-
// way federated messages that fedbus stores and delivers when the remote
// can take them, in publish order per destination, each once.
type Notifier struct {
	js       jetstream.JetStream
	subjects contract.Subjects
	source   string
	// Timeout bounds a Notify whose context has no deadline
	// (DefaultTimeout).
	Timeout time.Duration
}

// NewNotifier returns a Notifier that publishes with js; source is the
// CloudEvents source of its notifications, e.g. "/galley".
func NewNotifier(js jetstream.JetStream, subjects contract.Subjects, source string) *Notifier {
	return &Notifier{js: js, subjects: subjects, source: source, Timeout: DefaultTimeout}
}

// Notify stores a notification for rpc of component on the backend of
// targetDomain and returns its id (ce-id) once JetStream has stored it
// durably. The id is JetStream's deduplication id: publishing again with
// WithID(id), e.g. after a timeout whose outcome is unknown, stores
// nothing new within the stream's duplicate window (FED_NOTIFY_DUPLICATE_WINDOW,
// 2 minutes by default), so retrying never doubles a notification. The id is
// returned with every error after it was chosen, for that retry.
//
// Errors are *contract.Error: invalid-endpoint or domain-parse-error for a
// token that breaks its rule and invalid-request for an id that is not 1
// to 128 printable ASCII characters without spaces (nothing is published
// then), notification-store-full when the store is at its limit (nothing
// stored is evicted for it), payload-too-large, component-unavailable when
// no stream holds fed.notify (no federator has created it yet) and
// federation-timeout when the store did not answer in time (the outcome is
// unknown: retry with the same id).
func (n *Notifier) Notify(ctx context.Context, targetDomain, component, rpc string, body []byte, opts ...CallOption) (string, error) {
	subject, err := n.subjects.Notify(component, rpc, targetDomain)
	if err != nil {
		return "", err
	}
	ev := Event{Source: n.source, Type: contract.TypeNotification, DataContentType: contract.ContentTypeJSON, Data: body}
	for _, o := range opts {
		o(&ev)
	}
	if ev.ID == "" {
		ev.ID = NewID()
	}
	if !contract.ValidRequestID(ev.ID) {
		return "", contract.Errorf(contract.LabelInvalidRequest, "notification id %q is not 1 to 128 printable ASCII characters without spaces", contract.Truncate(ev.ID, 64))
	}
	ev.TimeoutMs, ev.Structured = 0, false
	if _, ok := ctx.Deadline(); !ok && n.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.Timeout)
		defer cancel()
	}
	msg := ev.Message(subject)
	msg.Header.Set(contract.HeaderMsgID, ev.ID)
	if _, err := n.js.PublishMsg(ctx, msg); err != nil {
		return ev.ID, StoreError(subject, MessageSize(msg), err)
	}
	return ev.ID, nil
}

// StoreError maps the failure of a JetStream publish (a message of size
// bytes) on subject to the contract's error (see Notifier.Notify); the
// ingress uses it for its inbox as well.
func StoreError(subject string, size int, err error) *contract.Error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jsErrStoreFailed, jsErrInsufficient:
			return contract.Errorf(contract.LabelStoreFull, "the notification store refused %s: %s (stored notifications are kept; try again later)", subject, apiErr.Description)
		case jsErrMsgTooLarge:
			return contract.Errorf(contract.LabelPayloadTooLarge, "notification on %s is larger than the store accepts: %s", subject, apiErr.Description)
		}
	}
	switch {
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return contract.Errorf(contract.LabelComponentUnavailable, "no stream holds %s (no federator has created it yet?)", subject)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout), errors.Is(err, context.Canceled):
		return contract.Errorf(contract.LabelTimeout, "the notification store did not confirm %s in time; retry with the same id", subject)
	default:
		return PublishError(subject, size, err)
	}
}
