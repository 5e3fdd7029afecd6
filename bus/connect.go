package bus

import (
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/internal/redact"
)

// Connect connects to NATS with the options every fedbus process wants:
// endless reconnects, a bounded reconnect buffer, logged state changes,
// and a move to another server of the cluster when its server enters
// lame-duck mode (lameduck.go). extra options (credentials, TLS) are
// applied last. The error never holds a password or token of urls
// (masked, as in the reconnect log lines).
func Connect(urls, name string, log *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil { // Close or Drain: a stop, not a failure
				log.Debug("nats connection closed")
				return
			}
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		// The move ends within quiesceTimeout + moveTimeout.
		nats.LameDuckModeHandler(func(nc *nats.Conn) { go moveOffLameDuck(nc, log) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("nats async error", "subject", subject, "err", err)
		}),
	}
	nc, err := nats.Connect(urls, append(opts, extra...)...)
	if err != nil {
		// The URLs may carry a password or token: masked (redact).
		return nil, redact.URLError("connect nats", urls, err)
	}
	return nc, nil
}
