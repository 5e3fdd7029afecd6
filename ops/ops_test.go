package ops

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body)
}

func TestEndpoints(t *testing.T) {
	s := New(nil, slog.New(slog.DiscardHandler))
	failing := errors.New("not connected")
	s.AddCheck("nats", func(context.Context) error { return failing })
	s.AddCheck("certificates", func(context.Context) error { return Passed("valid until %s", "tomorrow") })
	s.AddCheck("panics", func(context.Context) error { panic("boom") })
	h := s.Handler()

	if code, body := get(t, h, PathLive); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/livez: %d %q (a failing check must not make the process not live)", code, body)
	}
	code, body := get(t, h, PathReady)
	want := "[-]nats failed: not connected\n[+]certificates ok: valid until tomorrow\n[-]panics failed: check panicked: boom\nnot ready\n"
	if code != http.StatusServiceUnavailable || body != want {
		t.Errorf("/readyz: %d\n%s\nwant\n%s", code, body, want)
	}
	failing = nil
	s2 := New(nil, slog.New(slog.DiscardHandler))
	s2.AddCheck("nats", func(context.Context) error { return nil })
	if code, body := get(t, s2.Handler(), PathReady); code != http.StatusOK || !strings.HasSuffix(body, "ready\n") {
		t.Errorf("/readyz: %d %q", code, body)
	}
	s2.SetStopping()
	if code, body := get(t, s2.Handler(), PathReady); code != http.StatusServiceUnavailable || !strings.Contains(body, "[-]shutdown failed: stopping") {
		t.Errorf("/readyz while stopping: %d %q", code, body)
	}
	if code, _ := get(t, h, PathMetrics); code != http.StatusNotFound {
		t.Errorf("/metrics without a gatherer: %d", code)
	}
}

func TestProbeURL(t *testing.T) {
	for addr, want := range map[string]string{
		":9090":          "http://127.0.0.1:9090/readyz",
		"0.0.0.0:9090":   "http://127.0.0.1:9090/readyz",
		"[::]:9090":      "http://[::1]:9090/readyz",
		"10.0.0.5:19091": "http://10.0.0.5:19091/readyz",
	} {
		got, err := ProbeURL(addr, PathReady)
		if err != nil || got != want {
			t.Errorf("ProbeURL(%q) = %q, %v; want %q", addr, got, err, want)
		}
	}
	if _, err := ProbeURL("9090", PathReady); err == nil {
		t.Error("ProbeURL without a port: no error")
	}
}
