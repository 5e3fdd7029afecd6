package e2e

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// The federator's outbound safeguards: FED_REQUIRE_DNSSEC for the remote's
// SRV record, and the backoff after a remote's 429.

// ingressCounter is a slog.Handler that counts the requests an ingress
// answered: each one ends with one "request served" or "request failed"
// line of the logger tagged component=ingress (written just after the
// answer: a caller may see the answer first). Other lines are dropped.
type ingressCounter struct {
	n       *atomic.Int64
	ingress bool
}

// countIngressRequests returns a logger for a backend and the number of
// requests its ingress has answered so far.
func countIngressRequests() (*slog.Logger, func() int64) {
	n := new(atomic.Int64)
	return slog.New(ingressCounter{n: n}), n.Load
}

func (h ingressCounter) Enabled(context.Context, slog.Level) bool { return true }

func (h ingressCounter) Handle(_ context.Context, r slog.Record) error {
	if h.ingress && (r.Message == "request served" || r.Message == "request failed") {
		h.n.Add(1)
	}
	return nil
}

func (h ingressCounter) WithAttrs(attrs []slog.Attr) slog.Handler {
	for _, a := range attrs {
		if a.Key == "component" {
			h.ingress = a.Value.String() == "ingress"
		}
	}
	return h
}

func (h ingressCounter) WithGroup(string) slog.Handler { return h }

// counted is a backend of an outbound test and the number of requests its
// ingress has answered so far.
type counted struct {
	*fedtest.Backend
	seen func() int64
}

// startCounted starts allow-all backends sharing a new CA and DNS server,
// one per domain (its infra host is fed.<first label>-infra.example.net),
// with the environment overrides of env[domain].
func startCounted(tb testing.TB, env map[string]map[string]string, domains ...string) (*testbed.DNS, []counted) {
	tb.Helper()
	ca, err := testbed.NewCA("e2e CA")
	if err != nil {
		tb.Fatal(err)
	}
	d := testbed.StartDNS(tb)
	dir := tb.TempDir()
	out := make([]counted, 0, len(domains))
	for _, domain := range domains {
		log, seen := countIngressRequests()
		infra := "fed." + strings.SplitN(domain, ".", 2)[0] + "-infra.example.net"
		be := startBackend(tb, fedtest.BackendOptions{Domain: domain, InfraHost: infra, CA: ca, DNS: d, Dir: dir,
			Strategy: "allow-all", Logger: log, Env: env[domain]})
		serve(tb, be, "brig", component)
		out = append(out, counted{Backend: be, seen: seen})
	}
	return d, out
}

// TestOutboundRequireDNSSEC: A requires DNSSEC. While the resolver does
// not validate, A's call to B fails with discovery-failure and nothing
// reaches B's ingress; once it validates, A's call to C (whose answer is
// not cached yet) is served. C, which does not require DNSSEC, calls B
// without validation as before.
func TestOutboundRequireDNSSEC(t *testing.T) {
	d, bes := startCounted(t, map[string]map[string]string{domainA: {"FED_REQUIRE_DNSSEC": "true"}}, domainA, domainB, domainC)
	a, b, c := bes[0], bes[1], bes[2]

	// The steps run in order: A's answer for B stays cached (unvalidated),
	// so the validated call goes to C.
	steps := []struct {
		name      string
		authentic bool // the resolver validates (AD flag)
		from, to  counted
		label     string // empty: served
		wantSeen  int64  // requests to's ingress answered
	}{
		{"required, unvalidated SRV: discovery-failure, nothing sent", false, a, b, contract.LabelDiscoveryFailure, 0},
		{"required, validated SRV: served", true, a, c, "", 1},
		{"not required, unvalidated SRV: served", false, c, b, "", 1},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			d.SetAuthenticData(s.authentic)
			if s.label != "" {
				expectLabel(t, s.from.Backend, labelCase{target: s.to.Domain, comp: "brig", rpc: "echo", label: s.label})
			} else if got, err := s.from.Client("/t").Call(context.Background(), s.to.Domain, "brig", "echo", []byte(`1`)); err != nil || string(got) != "1" {
				t.Fatalf("%s → %s: %q, %v", s.from.Domain, s.to.Domain, got, err)
			}
			waitFor(t, 5*time.Second, "the count of "+s.to.Domain+"'s ingress", func() bool { return s.to.seen() == s.wantSeen })
		})
	}
}

// TestBackoffAfterRemote429: B's ingress allows A one request per second
// (burst 1). A spends it; B's next answer is 429 with Retry-After; then
// A's calls to B fail fast with too-many-requests and B's ingress sees
// none of them until the backoff ends, after which calls go through.
func TestBackoffAfterRemote429(t *testing.T) {
	_, bes := startCounted(t, nil, domainA, domainB)
	a, b := bes[0], bes[1]
	if err := b.Ingress.SetOriginLimits(1, 1, 0); err != nil {
		t.Fatal(err)
	}
	call := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := a.Client("/t").Call(ctx, domainB, "brig", "echo", []byte(`1`))
		if err == nil && string(got) != "1" {
			t.Fatalf("A → B answered %q, want 1", got)
		}
		return err
	}

	// The first call spends the burst; a later one gets B's 429.
	var limited time.Time
	var reached int64 // calls that reached B: the successes and the 429
	for limited.IsZero() {
		if reached == 10 {
			t.Fatal("B never answered 429")
		}
		err := call()
		reached++
		if err == nil {
			continue
		}
		var fe *contract.Error
		if !errors.As(err, &fe) || fe.Label != contract.LabelRemoteError || fe.Inner == nil || fe.Inner.Label != contract.LabelTooManyRequests {
			t.Fatalf("over B's limit: %v; want %s with inner %s", err, contract.LabelRemoteError, contract.LabelTooManyRequests)
		}
		limited = time.Now()
	}
	waitFor(t, 5*time.Second, "B's ingress to count the calls", func() bool { return b.seen() == reached })

	// Until the Retry-After (1 s) ends, every call fails here; then one
	// goes through.
	failedFast := 0
	waitFor(t, 10*time.Second, "a call to B to go through after the backoff", func() bool {
		err := call()
		if err == nil {
			return true
		}
		var fe *contract.Error
		if !errors.As(err, &fe) || fe.Label != contract.LabelTooManyRequests || fe.Inner != nil || !strings.Contains(fe.Message, "asked us to wait") {
			t.Fatalf("during the backoff: %v; want a local %s saying B asked us to wait", err, contract.LabelTooManyRequests)
		}
		if n := b.seen(); n != reached {
			t.Fatalf("B's ingress answered %d request(s) during the backoff", n-reached)
		}
		failedFast++
		return false
	})
	waited := time.Since(limited)
	if failedFast == 0 {
		t.Fatal("no call failed fast after the 429")
	}
	waitFor(t, 5*time.Second, "B's ingress to count the call after the backoff", func() bool { return b.seen() == reached+1 })
	if waited < 500*time.Millisecond {
		t.Fatalf("a call went through %v after the 429, before the Retry-After of 1s", waited)
	}
	t.Logf("%d call(s) failed fast; a call went through %v after the 429", failedFast, waited.Round(time.Millisecond))
}
