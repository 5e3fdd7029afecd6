package setup_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/fedbus/fedbus/config"
	"github.com/fedbus/fedbus/ops"
	"github.com/fedbus/fedbus/setup"
	"github.com/fedbus/fedbus/test/testbed"
)

// startNATSOn starts an embedded NATS server on 127.0.0.1:port (-1: any).
func startNATSOn(tb testing.TB, port int) *server.Server {
	tb.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
	if err != nil {
		tb.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats not ready")
	}
	return s
}

// readyz GETs /readyz of h and returns the status and body.
func readyz(h http.Handler) (int, string) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, ops.PathReady, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

// waitReady polls /readyz until its status is want and its body has
// line, and returns the body.
func waitReady(t *testing.T, h http.Handler, want int, line, why string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := readyz(h)
		if code == want && strings.Contains(body, line) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /readyz stayed %d, want %d:\n%s", why, code, want, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReadyz: /readyz of a process's shared services is ready with NATS,
// DNS and a valid certificate; unready (naming the check) while NATS is
// down and ready again when it returns; unready when the certificate on
// disk is replaced by an expired one; unready once stopping.
func TestReadyz(t *testing.T) {
	ca, err := testbed.NewCA("ready CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	leaf, err := ca.Issue(testbed.LeafOptions{}, "fed.a-infra.example.net")
	if err != nil {
		t.Fatal(err)
	}
	files, err := leaf.WriteFiles(dir, "a", ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	dns := testbed.StartDNS(t)
	ns := startNATSOn(t, -1)
	t.Cleanup(func() { ns.Shutdown() }) // the last server started
	c := config.DefaultCommon()
	c.Domain = "a.example.com"
	c.NATSURL = ns.ClientURL()
	c.DNSServer = dns.Addr()
	c.TLSCert, c.TLSKey, c.TLSCA = files.Cert, files.Key, files.CA
	c.TLSReloadInterval = 50 * time.Millisecond
	c.KVBucket = "" // the static configuration: this NATS has no JetStream
	sh, err := setup.Open(c, "ready test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = sh.Close(ctx)
	})
	srv := ops.New(sh.Metrics.Registry(), slog.New(slog.DiscardHandler))
	for _, ch := range sh.Checks() {
		srv.AddCheck(ch.Name, ch.Run)
	}
	h := srv.Handler()

	body := waitReady(t, h, http.StatusOK, "ready", "at start")
	for _, want := range []string{"[+]nats ok", "[+]certificates ok", "[+]policy ok", "[+]dns ok", "ready"} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q:\n%s", want, body)
		}
	}

	t.Run("nats stops and returns", func(t *testing.T) {
		port := ns.Addr().(*net.TCPAddr).Port
		ns.Shutdown()
		ns.WaitForShutdown()
		waitReady(t, h, http.StatusServiceUnavailable, "[-]nats failed", "NATS stopped")
		ns = startNATSOn(t, port)
		waitReady(t, h, http.StatusOK, "[+]nats ok", "NATS back")
		if v := gauge(t, sh, "fedbus_nats_reconnects_total"); v < 1 {
			t.Errorf("fedbus_nats_reconnects_total = %v after NATS came back", v)
		}
	})

	t.Run("dns stops", func(t *testing.T) {
		if err := dns.Stop(); err != nil {
			t.Fatal(err)
		}
		waitReady(t, h, http.StatusServiceUnavailable, "[-]dns failed", "DNS stopped")
		if err := dns.Start(); err != nil {
			t.Fatal(err)
		}
		waitReady(t, h, http.StatusOK, "[+]dns ok", "DNS back")
	})

	t.Run("certificate on disk expired", func(t *testing.T) {
		old, err := ca.Issue(testbed.LeafOptions{NotAfter: time.Now().Add(-time.Minute)}, "fed.a-infra.example.net")
		if err != nil {
			t.Fatal(err)
		}
		expired, err := old.WriteFiles(t.TempDir(), "a", ca.CertPEM)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range [][2]string{{expired.Cert, files.Cert}, {expired.Key, files.Key}} {
			b, err := os.ReadFile(f[0])
			if err != nil {
				t.Fatal(err)
			}
			tmp := filepath.Join(dir, "tmp")
			if err := os.WriteFile(tmp, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, f[1]); err != nil {
				t.Fatal(err)
			}
		}
		body := waitReady(t, h, http.StatusServiceUnavailable, "[-]certificates failed", "certificate expired")
		if v := gauge(t, sh, "fedbus_certificate_expiry_timestamp_seconds"); v > float64(time.Now().Unix()) {
			t.Errorf("fedbus_certificate_expiry_timestamp_seconds = %v, want the expired certificate's", v)
		}
		if !strings.Contains(body, "expired at") {
			t.Errorf("body does not say the certificate expired:\n%s", body)
		}
	})

	t.Run("stopping", func(t *testing.T) {
		srv.SetStopping()
		waitReady(t, h, http.StatusServiceUnavailable, "[-]shutdown failed: stopping", "stopping")
	})
}

// gauge returns the value of the first series of metric name in the
// process's registry.
func gauge(t *testing.T, sh *setup.Shared, name string) float64 {
	t.Helper()
	fams, err := sh.Metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name || len(f.GetMetric()) == 0 {
			continue
		}
		m := f.GetMetric()[0]
		if m.Counter != nil {
			return m.Counter.GetValue()
		}
		return m.Gauge.GetValue()
	}
	t.Fatalf("no metric %s", name)
	return 0
}
