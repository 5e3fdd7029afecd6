package ingress

import (
	"context"
	"log"
	"log/slog"
	"strings"

	"github.com/fedbus/fedbus/metrics"
)

// serverLog is the net/http server's error log, written to the ingress's
// logger at a level that fits the message. net/http reports only text, so
// the message is looked at:
//
//   - a TLS handshake that ended because the peer closed or reset the
//     connection (a TCP health check, a load balancer's probe, a port
//     scan) is DEBUG: it happens all the time and means nothing;
//   - any other failed TLS handshake (an untrusted client certificate, a
//     protocol mismatch) is INFO: the peer's mistake, not this backend's;
//   - everything else is WARN.
func serverLog(l *slog.Logger, m *metrics.Metrics) *log.Logger {
	return log.New(serverLogWriter{l, m}, "", 0)
}

type serverLogWriter struct {
	l *slog.Logger
	m *metrics.Metrics // counts the TLS handshake failures, which net/http reports nowhere else
}

func (w serverLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelWarn
	if strings.HasPrefix(msg, "http: TLS handshake error") {
		w.m.TLSFailure(metrics.Inbound, metrics.TLSReasonText(msg))
		level = slog.LevelInfo
		if strings.HasSuffix(msg, ": EOF") || strings.HasSuffix(msg, "connection reset by peer") {
			level = slog.LevelDebug
		}
	}
	w.l.Log(context.Background(), level, msg)
	return len(p), nil
}
