package ingress

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

// TestNATSDownAnswers503: with NATS gone, a request gets
// component-unavailable (503) at once, not federation-timeout (504) at the
// end of its deadline.
func TestNATSDownAnswers503(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.serveEcho(t)
	h2 := e.client(t, e.certA, false)
	e.ns.Shutdown()
	e.ns.WaitForShutdown()
	resp, body := e.mustDo(t, h2, call{path: "/federation/brig/get-user-by-handle", header: origin(originA)})
	var got contract.Error
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	if resp.StatusCode != http.StatusServiceUnavailable || got.Label != contract.LabelComponentUnavailable {
		t.Errorf("got %d %s, want 503 component-unavailable", resp.StatusCode, body)
	}
}

// TestServerLogLevels: the HTTP server's messages at a level that fits: a
// TCP probe (connect, close) is not a warning.
func TestServerLogLevels(t *testing.T) {
	tests := []struct {
		msg  string
		want string
	}{
		{"http: TLS handshake error from 127.0.0.1:40000: EOF", "DEBUG"},
		{"http: TLS handshake error from 127.0.0.1:40000: read tcp 127.0.0.1:8443->127.0.0.1:40000: read: connection reset by peer", "DEBUG"},
		{"http: TLS handshake error from 127.0.0.1:40000: tls: failed to verify certificate: x509: certificate signed by unknown authority", "INFO"},
		{"http: Accept error: accept tcp [::]:8443: accept4: too many open files; retrying in 5ms", "WARN"},
		{"http2: server: error reading preface from client 127.0.0.1:40000: bogus greeting", "WARN"},
	}
	for _, tt := range tests {
		t.Run(tt.msg, func(t *testing.T) {
			var buf testbed.LogBuffer
			serverLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), nil).Print(tt.msg)
			if !strings.Contains(buf.String(), "level="+tt.want) {
				t.Errorf("logged %q, want level %s", buf.String(), tt.want)
			}
		})
	}
}
