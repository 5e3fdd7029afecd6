package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

const (
	domainA = "a.example.com"
	domainB = "b.example.com"
	infraA  = "fed.a-infra.example.net"
	infraB  = "fed.b-infra.example.net"
)

// twoBackends starts A and B (allowing each other) with a brig on B, and
// returns A, B and the diagnostic configuration of A.
func twoBackends(t *testing.T) (*fedtest.Backend, *fedtest.Backend, Config) {
	t.Helper()
	ca, err := testbed.NewCA("ctl CA")
	if err != nil {
		t.Fatal(err)
	}
	dns := testbed.StartDNS(t)
	start := func(domain, infra, allow string) *fedtest.Backend {
		be, err := fedtest.StartBackend(fedtest.BackendOptions{Domain: domain, InfraHost: infra, CA: ca, DNS: dns, Dir: t.TempDir(),
			Strategy: "allow-list", AllowList: []string{allow}, Components: []string{"brig"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = be.Close(ctx)
		})
		return be
	}
	a, b := start(domainA, infraA, domainB), start(domainB, infraB, domainA)
	for _, be := range []*fedtest.Backend{a, b} {
		srv, err := bus.Serve(context.Background(), be.NATS, be.Subjects, "brig", func(_ context.Context, r *bus.Request) ([]byte, error) {
			return r.Body, nil
		}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	}
	cfg := NewConfig()
	cfg.NATSURL, cfg.Components = a.NATSURL, []string{"brig"}
	cfg.Diag = Diag{
		Domain: domainA, DNSServer: dns.Addr(), TLSCert: a.Files.Cert, TLSKey: a.Files.Key, TLSCA: a.Files.CA,
		Strategy: "allow-list", AllowList: []string{domainB}, SubjectPrefix: "fed",
		AllowPrivate: true, StatusBucket: "fedbus-status", RequestTimeout: 5 * time.Second,
		ExpiryFail: time.Hour, ExpiryWarn: 2 * time.Hour, // the test certificates live a day
	}
	return a, b, cfg
}

func run(t *testing.T, cfg Config, args string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := Run(context.Background(), cfg, strings.Fields(args), &out, &out)
	return out.String(), err
}

func TestDiagnostics(t *testing.T) {
	_, b, cfg := twoBackends(t)

	t.Run("check passes", func(t *testing.T) {
		out, err := run(t, cfg, "check")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, want := range []string{"ok   srv", "in the certificate", "ok   federator", "ok   ingress", "1 instance(s)", "brig answers", "ok   allow list"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("check fails when the SRV record points at a name missing from the certificate", func(t *testing.T) {
		bad := cfg
		bad.Diag.TLSCert, bad.Diag.TLSKey = b.Files.Cert, b.Files.Key // B's certificate: fed.b-infra...
		out, err := run(t, bad, "check")
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("err %v, want ErrFailed:\n%s", err, out)
		}
		for _, want := range []string{"FAIL srv", "points at " + infraA, "not a name of this backend's certificate", "fix: point the SRV record at a name of the certificate (" + infraB + ")"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("check fails on an empty allow list, and in JSON", func(t *testing.T) {
		bad := cfg
		bad.Diag.AllowList = nil
		out, err := run(t, bad, "check --json")
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("err %v, want ErrFailed:\n%s", err, out)
		}
		var res struct {
			OK       bool      `json:"ok"`
			Findings []Finding `json:"findings"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		found := false
		for _, f := range res.Findings {
			found = found || f.Check == "allow list" && f.State == StateFail && f.Fix != ""
		}
		if res.OK || !found {
			t.Errorf("JSON: %s", out)
		}
	})

	t.Run("discover", func(t *testing.T) {
		out, err := run(t, cfg, "discover "+domainB)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, want := range []string{"ok   srv", "_wire-server-federator._tcp." + domainB, "ok   target 1", infraB, "127.0.0.1", "fits", "TLS 1.3", "ALPN h2"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		out, err = run(t, cfg, "discover nothing.example.com")
		if !errors.Is(err, ErrFailed) || !strings.Contains(out, "fix: publish the record") {
			t.Errorf("discover of a domain without SRV: %v\n%s", err, out)
		}
	})

	t.Run("call", func(t *testing.T) {
		out, err := run(t, cfg, `call b.example.com brig echo "hi" --json`)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		var res CallResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if res.Status != StateOK || string(res.Body) != `"hi"` || len(res.TraceID) != 32 || res.LatencyMs <= 0 {
			t.Errorf("call: %+v", res)
		}
		out, err = run(t, cfg, `call c.example.com brig echo`)
		if !errors.Is(err, ErrFailed) || !strings.Contains(out, "federation-denied") || !strings.Contains(out, "trace id:") {
			t.Errorf("call to a denied domain: %v\n%s", err, out)
		}
	})

	t.Run("remotes status", func(t *testing.T) {
		out, err := run(t, cfg, "remotes status")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, want := range []string{"DOMAIN", domainB, "up", "from 1 federator worker(s)"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
}
