package bus

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/contract"
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
// Tokens are unguessable (see replyTokens), so that nobody who sees one
// request's reply subject can answer another request.
type Requester struct {
	nc     *nats.Conn
	out    *Outbox
	ownOut bool
	prefix string // "<inbox>."
	sub    *nats.Subscription
	tokens *replyTokens

	// unregister removes the Requester from the users that move with the
	// connection off a server in lame-duck mode (lameduck.go).
	unregister func()

	mu      sync.Mutex
	closed  bool
	pending map[string]chan result
	// hold, while the connection moves off a server in lame-duck mode,
	// makes new requests wait (closed when they may go).
	hold chan struct{}
}

// result is what ends a request: its reply, or the error that ended it
// (the publish failed, the Requester closed).
type result struct {
	msg *nats.Msg
	err error
}

// NewRequester subscribes a new inbox of nc (honouring a custom inbox
// prefix) and returns a Requester that publishes through out, or through an
// Outbox of its own (logging to logger) when out is nil. Close releases
// both.
func NewRequester(nc *nats.Conn, out *Outbox, logger *slog.Logger) (*Requester, error) {
	tokens, err := newReplyTokens()
	if err != nil {
		return nil, fmt.Errorf("new requester: %w", err)
	}
	r := &Requester{nc: nc, out: out, prefix: nc.NewInbox() + ".", tokens: tokens, pending: make(map[string]chan result)}
	if r.out == nil {
		if r.out, err = NewOutbox(nc, logger); err != nil {
			return nil, fmt.Errorf("new requester: %w", err)
		}
		r.ownOut = true
	}
	sub, err := nc.Subscribe(r.prefix+"*", r.deliver)
	if err == nil {
		if err = sub.SetPendingLimits(-1, -1); err != nil {
			_ = sub.Unsubscribe()
		}
	}
	if err != nil {
		if r.ownOut {
			r.out.Close()
		}
		return nil, fmt.Errorf("new requester: subscribe %s*: %w", r.prefix, err)
	}
	r.sub = sub
	r.unregister = register(nc, r)
	return r, nil
}

// IsConnected reports whether the NATS connection is up: while it is not,
// Exchange fails requests at once (component-unavailable). A connection
// moving off a server in lame-duck mode counts as up: its requests wait
// for the move (quiesce, resume).
func (r *Requester) IsConnected() bool {
	if r.nc.IsConnected() {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hold != nil
}

// quiesce holds new requests and returns once those in flight have their
// reply (or ctx ended), before the connection moves off a server in
// lame-duck mode: a reply on its way when the connection moves is lost.
func (r *Requester) quiesce(ctx context.Context) {
	r.mu.Lock()
	if r.hold == nil {
		r.hold = make(chan struct{})
	}
	r.mu.Unlock()
	for ctx.Err() == nil {
		r.mu.Lock()
		n := len(r.pending)
		r.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// resume lets the held requests go.
func (r *Requester) resume() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.hold != nil {
		close(r.hold)
		r.hold = nil
	}
}

// deliver hands a reply to the request waiting for it; a reply nobody
// waits for (its request timed out) is dropped, as nats.go does.
func (r *Requester) deliver(msg *nats.Msg) {
	r.end(msg.Subject[len(r.prefix):], result{msg: msg})
}

// end ends the request of token with res, if it still waits.
func (r *Requester) end(token string, res result) {
	r.mu.Lock()
	ch, ok := r.pending[token]
	delete(r.pending, token)
	r.mu.Unlock()
	if ok {
		ch <- res // buffered, one result per token
	}
}

// publishFailed ends the request whose publish failed at once, with the
// publish error (the Outbox calls it).
func (r *Requester) publishFailed(msg *nats.Msg, _ string, err error) {
	if token, ok := strings.CutPrefix(msg.Reply, r.prefix); ok {
		r.end(token, result{err: fmt.Errorf("publish request on %s (%d bytes): %w", msg.Subject, MessageSize(msg), err)})
	}
}

// RequestMsgWithContext publishes msg with a reply subject of the
// Requester's inbox and waits for the reply or the end of ctx. A reply that
// reports that nothing serves the subject is nats.ErrNoResponders; a
// request the server cannot carry (larger than its max payload) or whose
// publish fails ends at once with the publish error (nats.ErrMaxPayload,
// nats.ErrConnectionClosed, ...), never at ctx's deadline.
func (r *Requester) RequestMsgWithContext(ctx context.Context, msg *nats.Msg) (*nats.Msg, error) {
	if over, limit := tooLarge(r.nc, msg); over {
		return nil, fmt.Errorf("publish request on %s (%d bytes, max_payload %d): %w", msg.Subject, MessageSize(msg), limit, nats.ErrMaxPayload)
	}
	msg.Reply = r.tokens.reply(r.prefix)
	token := msg.Reply[len(r.prefix):]
	ch := make(chan result, 1)
	r.mu.Lock()
	for r.hold != nil && !r.closed {
		hold := r.hold
		r.mu.Unlock()
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		r.mu.Lock()
	}
	if r.closed {
		r.mu.Unlock()
		return nil, ErrRequesterClosed
	}
	r.pending[token] = ch
	r.mu.Unlock()
	r.out.send(outMsg{msg: msg, requestID: msg.Header.Get(contract.HeaderID), owner: r})
	select {
	case res := <-ch:
		if res.err != nil {
			return nil, res.err
		}
		reply := res.msg
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
	r.unregister()
	r.mu.Lock()
	r.closed = true
	if r.hold != nil {
		close(r.hold)
		r.hold = nil
	}
	for token, ch := range r.pending {
		// Not sent to yet: end removes an entry before sending.
		ch <- result{err: ErrRequesterClosed}
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

// replyTokens makes the last token of the Requester's reply subjects. A
// counter would let anyone who sees one reply subject (every subscriber of
// the request's subject does) predict the next ones and answer requests
// that are not theirs; nats.go's own reply tokens are random for that
// reason. Each token is the counter encrypted with AES-128 under a random
// key: a permutation, so tokens never repeat within a Requester, and
// without the key unpredictable. 22 characters of base64url (valid in a
// subject token), one allocation (the reply subject).
type replyTokens struct {
	block cipher.Block
	seq   atomic.Uint64
}

// tokenLen is the length of a reply token: 16 bytes in base64url.
var tokenLen = base64.RawURLEncoding.EncodedLen(aes.BlockSize)

func newReplyTokens() (*replyTokens, error) {
	key := make([]byte, 16)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("reply token key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("reply token key: %w", err)
	}
	return &replyTokens{block: block}, nil
}

// reply returns prefix followed by a new token.
func (t *replyTokens) reply(prefix string) string {
	var b [aes.BlockSize]byte
	binary.BigEndian.PutUint64(b[8:], t.seq.Add(1))
	t.block.Encrypt(b[:], b[:])
	var enc [24]byte // tokenLen (22) rounded up
	base64.RawURLEncoding.Encode(enc[:], b[:])
	var sb strings.Builder
	sb.Grow(len(prefix) + tokenLen)
	sb.WriteString(prefix)
	sb.Write(enc[:tokenLen])
	return sb.String()
}

// PendingBytes returns the bytes of replies received and not yet handed to
// their requests.
func (r *Requester) PendingBytes() int {
	_, b, err := r.sub.Pending()
	if err != nil {
		return 0
	}
	return b
}
