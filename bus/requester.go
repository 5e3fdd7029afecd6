package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/fedbus/fedbus/contract"
	"github.com/nats-io/nats.go"
)

// Doer sends a request message and waits for its reply. *nats.Conn is one
// (each request published and flushed on its own); *Requester is one whose
// requests are published in batches through an Outbox.
type Doer interface {
	RequestMsgWithContext(ctx context.Context, msg *nats.Msg) (*nats.Msg, error)
}

// ErrRequesterClosed is the error of a request made after Requester.Close.
var ErrRequesterClosed = errors.New("bus: requester closed")

// Requester makes NATS requests whose publishes go through an Outbox (see
// Outbox for why), and matches the replies on one wildcard subscription of
// its own inbox, as nats.go's request multiplexer does: <inbox>.<token>.
type Requester struct {
	out    *Outbox
	ownOut bool
	prefix string // "<inbox>."
	sub    *nats.Subscription
	seq    atomic.Uint64

	mu      sync.Mutex
	closed  bool
	pending map[string]chan *nats.Msg
}

// NewRequester subscribes a new inbox of nc (honouring a custom inbox
// prefix) and returns a Requester that publishes through out, or through an
// Outbox of its own when out is nil. Close releases both.
func NewRequester(nc *nats.Conn, out *Outbox) (*Requester, error) {
	r := &Requester{out: out, prefix: nc.NewInbox() + ".", pending: make(map[string]chan *nats.Msg)}
	sub, err := nc.Subscribe(r.prefix+"*", r.deliver)
	if err != nil {
		return nil, fmt.Errorf("new requester: subscribe %s*: %w", r.prefix, err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("new requester: pending limits: %w", err)
	}
	r.sub = sub
	if r.out == nil {
		r.out, r.ownOut = NewOutbox(nc, nil), true
	}
	return r, nil
}

// deliver hands a reply to the request waiting for it; a reply nobody
// waits for (its request timed out) is dropped, as nats.go does.
func (r *Requester) deliver(msg *nats.Msg) {
	token := msg.Subject[len(r.prefix):]
	r.mu.Lock()
	ch, ok := r.pending[token]
	delete(r.pending, token)
	r.mu.Unlock()
	if ok {
		ch <- msg // buffered, one reply per token
	}
}

// RequestMsgWithContext publishes msg with a reply subject of the
// Requester's inbox and waits for the reply or the end of ctx. A reply that
// reports that nothing serves the subject is nats.ErrNoResponders.
func (r *Requester) RequestMsgWithContext(ctx context.Context, msg *nats.Msg) (*nats.Msg, error) {
	token := strconv.FormatUint(r.seq.Add(1), 36)
	ch := make(chan *nats.Msg, 1)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, ErrRequesterClosed
	}
	r.pending[token] = ch
	r.mu.Unlock()
	msg.Reply = r.prefix + token
	r.out.Publish(msg, msg.Header.Get(contract.HeaderID))
	select {
	case reply := <-ch:
		if reply == nil { // Close
			return nil, ErrRequesterClosed
		}
		if len(reply.Data) == 0 && reply.Header.Get(contract.HeaderStatus) == contract.StatusNoResponders {
			return nil, nats.ErrNoResponders
		}
		return reply, nil
	case <-ctx.Done():
		r.mu.Lock()
		delete(r.pending, token)
		r.mu.Unlock()
		return nil, ctx.Err()
	}
}

// Close unsubscribes the inbox; requests still waiting end at once with
// ErrRequesterClosed. It closes the Outbox if the Requester made it.
func (r *Requester) Close() error {
	r.mu.Lock()
	r.closed = true
	for token, ch := range r.pending {
		// Not sent to yet: deliver removes an entry before sending.
		ch <- nil
		delete(r.pending, token)
	}
	r.mu.Unlock()
	err := r.sub.Unsubscribe()
	if r.ownOut {
		r.out.Close()
	}
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		return fmt.Errorf("close requester: %w", err)
	}
	return nil
}
