package bus

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrProbeOption is returned by ProbeInbox for a connection made without
// nats.PermissionErrOnSubscribe(true), on which a refused subscription
// cannot be told from an idle one.
var ErrProbeOption = errors.New("bus: the connection needs nats.PermissionErrOnSubscribe(true)")

// ProbeInbox checks, before any request is made, that the NATS server lets
// this connection subscribe to its own inbox (its reply subjects, under
// the connection's inbox prefix): without that every request would wait
// for a reply that never comes. It subscribes to a fresh inbox, waits for
// the server to have processed the subscription (a flush, bounded by
// timeout) and unsubscribes; nothing is published. A refusal wraps
// nats.ErrPermissionViolation. The connection must have been made with
// nats.PermissionErrOnSubscribe(true).
func ProbeInbox(nc *nats.Conn, timeout time.Duration) error {
	if !nc.Opts.PermissionErrOnSubscribe {
		return ErrProbeOption
	}
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("subscribe to the inbox %s: %w", inbox, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.FlushTimeout(timeout); err != nil {
		return fmt.Errorf("subscribe to the inbox %s: %w", inbox, err)
	}
	// The server answers a refused subscription before the flush's PONG,
	// so the refusal is known now; NextMsg reports it at once.
	if _, err := sub.NextMsg(time.Millisecond); errors.Is(err, nats.ErrPermissionViolation) {
		return fmt.Errorf("subscribe to the inbox %s: %w", inbox, err)
	}
	return nil
}
