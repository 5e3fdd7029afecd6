//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
)

func TestMain(m *testing.M) {
	// The suite removes its containers itself; Ryuk (the reaper container)
	// would need a registry to pull from.
	if os.Getenv("TESTCONTAINERS_RYUK_DISABLED") == "" {
		_ = os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	}
	os.Exit(m.Run())
}

// TestFederation starts both backends once and runs the faults in order;
// each leaves the system whole again (the killed federator is started
// again) except the last.
func TestFederation(t *testing.T) {
	suiteStart := time.Now()
	e := setup(t)
	a := newCaller(t, e.ncA, domainB) // components of A calling B
	b := newCaller(t, e.ncB, domainA) // components of B calling A
	waitOK(t, a, "echo", 60*time.Second)
	waitOK(t, b, "echo", 30*time.Second)

	t.Run("round-trip-and-spread", func(t *testing.T) { testRoundTripAndSpread(t, e, a) })
	t.Run("sigkill-federator", func(t *testing.T) { testSIGKILL(t, e, a) })
	t.Run("remote-ingress-stopped", func(t *testing.T) { testIngressStopped(t, e, a) })
	t.Run("nats-node-killed", func(t *testing.T) { testNodeKilled(t, e, a, b) })
	t.Run("nats-node-lame-duck", func(t *testing.T) { testNodeLameDuck(t, e, a, b) })
	t.Run("nats-restart", func(t *testing.T) { testNATSRestart(t, e, a, b) })
	t.Run("sigterm-federator", func(t *testing.T) { testSIGTERM(t, e, a) })
	t.Logf("suite took %v", time.Since(suiteStart).Round(time.Second))
}

// waitOK sends echo requests until one succeeds.
func waitOK(tb testing.TB, c *caller, rpc string, within time.Duration) time.Duration {
	tb.Helper()
	start := time.Now()
	var last outcome
	for time.Since(start) < within {
		last = c.call(rpc, []byte(`"ping"`), nil, 2*time.Second)
		if last.ok() {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("no successful %s to %s within %v (last: %s)", rpc, c.target, within, last.label)
	return 0
}

func testRoundTripAndSpread(t *testing.T, e *env, a *caller) {
	ctx := context.Background()
	subjects, err := contract.NewSubjects(contract.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	brigA := bus.NewClient(e.ncA, subjects, "/brig")
	brigB := bus.NewClient(e.ncB, subjects, "/brig")
	type profile struct {
		ID struct {
			Domain string `json:"domain"`
		} `json:"id"`
		Handle string `json:"handle"`
	}
	tests := []struct {
		name       string
		client     *bus.Client
		target     string
		body       string
		wantHandle string // "" means the answer is null
		wantLabel  string
	}{
		{"A searches alice on B (the seed's exact handle search)", brigA, domainB, `"alice"`, "alice", ""},
		{"A searches an unknown handle on B", brigA, domainB, `"mallory"`, "", ""},
		{"B searches bob on A", brigB, domainA, `"bob"`, "bob", ""},
		{"A calls a domain off its allow list", brigA, "c.example.com", `"alice"`, "", contract.LabelFederationDenied},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			resp, err := tc.client.Call(cctx, tc.target, "brig", "get-user-by-handle", []byte(tc.body))
			if tc.wantLabel != "" {
				if !errors.Is(err, &contract.Error{Label: tc.wantLabel}) {
					t.Fatalf("err = %v, want %s", err, tc.wantLabel)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantHandle == "" {
				if string(resp) != "null" {
					t.Errorf("answer %s, want null", resp)
				}
				return
			}
			var p profile
			if err := json.Unmarshal(resp, &p); err != nil || p.Handle != tc.wantHandle || p.ID.Domain != tc.target {
				t.Errorf("answer %s (%v), want %s of %s", resp, err, tc.wantHandle, tc.target)
			}
		})
	}

	before, err := e.federatorsOf(ctx, domainA)
	if err != nil {
		t.Fatal(err)
	}
	const total = 600
	outs := a.load(ctx, loadSpec{workers: 12, rpc: "echo", timeout: 3 * time.Second, total: total})
	after, err := e.federatorsOf(ctx, domainA)
	if err != nil {
		t.Fatal(err)
	}
	var perWorker []int64
	var sum int64
	for cid, c := range after {
		d := c.InMsgs - before[cid].InMsgs // replies the worker published
		perWorker = append(perWorker, d)
		sum += d
	}
	slices.Sort(perWorker)
	s := a.summarize("round-trip-and-spread", outs)
	s.extra = fmt.Sprintf("federators=%d replies_per_federator=%v", len(after), perWorker)
	report(t, s)
	if len(before) != 3 || len(after) != 3 {
		t.Fatalf("%d federator connections before, %d after, want 3", len(before), len(after))
	}
	if s.ok != total || s.duplicates != 0 {
		t.Errorf("want all %d requests to succeed once: %s", total, s)
	}
	if sum != total {
		t.Errorf("federators published %d replies, want %d", sum, total)
	}
	for _, n := range perWorker {
		if n < total/10 {
			t.Errorf("a federator answered only %d of %d requests: %v", n, total, perWorker)
		}
	}
}

// victim returns the connection present in before and gone in after.
func victim(before, after map[string]connInfo) (connInfo, bool) {
	for cid, c := range before {
		if _, ok := after[cid]; !ok {
			return c, true
		}
	}
	return connInfo{}, false
}

func testSIGKILL(t *testing.T, e *env, a *caller) {
	ctx := context.Background()
	const workers = 16
	target := e.fedA[1]
	stopLoad := a.startLoad(loadSpec{workers: workers, rpc: "slow", slowMs: 20, timeout: 3 * time.Second})
	time.Sleep(2 * time.Second)
	before, err := e.federatorsOf(ctx, domainA)
	if err != nil {
		t.Error(err)
	}
	killAt := time.Now()
	if err := e.kill(ctx, target, "KILL"); err != nil {
		stopLoad()
		t.Fatal(err)
	}
	killed := time.Now() // the signal was delivered when docker answered
	time.Sleep(3 * time.Second)
	outs := stopLoad()
	after, err := e.federatorsOf(ctx, domainA)
	if err != nil {
		t.Error(err)
	}
	inFlight := int64(-1)
	if v, ok := victim(before, after); ok {
		inFlight = v.OutMsgs - v.InMsgs
	}
	okAfter, lateFailures := 0, 0
	var failedAt []string // start of each failed request, relative to the kill call
	for _, o := range outs {
		if o.start.After(killed) && o.ok() {
			okAfter++
		}
		if !o.ok() {
			failedAt = append(failedAt, fmt.Sprintf("%+d", o.start.Sub(killAt).Milliseconds()))
			if o.start.After(killed.Add(250 * time.Millisecond)) {
				lateFailures++
			}
		}
	}
	s := a.summarize("sigkill-federator", outs)
	s.extra = fmt.Sprintf("killed=%s in_flight_at_kill=%d kill_call_ms=%d failed_started_ms=[%s] ok_after_kill=%d",
		target.name, inFlight, killed.Sub(killAt).Milliseconds(), strings.Join(failedAt, " "), okAfter)
	report(t, s)
	if s.duplicates != 0 {
		t.Errorf("%d duplicate replies", s.duplicates)
	}
	for label, n := range s.failures {
		if label != contract.LabelTimeout {
			t.Errorf("%d requests failed with %s; only federation-timeout is allowed", n, label)
		}
	}
	if s.failed() > workers {
		t.Errorf("%d requests failed, more than the %d that can be in flight", s.failed(), workers)
	}
	if lateFailures > 0 {
		t.Errorf("%d requests sent after the kill failed", lateFailures)
	}
	if okAfter == 0 {
		t.Error("no request succeeded after the kill")
	}
	if code, err := exitCode(ctx, target); err != nil || code != 137 {
		t.Errorf("exit status %d (%v), want 137 (SIGKILL)", code, err)
	}

	if err := restart(ctx, target); err != nil {
		t.Fatal(err)
	}
	if err := e.waitFederators(ctx, domainA, 3, 30*time.Second); err != nil {
		t.Fatal(err)
	}
}

func testIngressStopped(t *testing.T, e *env, a *caller) {
	ctx := context.Background()
	if err := stop(ctx, e.ingressB, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	outs := a.load(lctx, loadSpec{workers: 4, rpc: "echo", timeout: 3 * time.Second, pause: 50 * time.Millisecond})
	cancel()
	var slowest time.Duration
	for _, o := range outs {
		slowest = max(slowest, o.end.Sub(o.start))
	}
	s := a.summarize("remote-ingress-stopped", outs)
	s.extra = fmt.Sprintf("slowest_failure_ms=%d request_timeout_ms=%d", slowest.Milliseconds(), requestTimeout.Milliseconds())

	startedAt := time.Now()
	if err := restart(ctx, e.ingressB); err != nil {
		report(t, s)
		t.Fatal(err)
	}
	waitOK(t, a, "echo", 15*time.Second)
	recovered := time.Since(startedAt) // from the start of the container
	s.extra += fmt.Sprintf(" success_again_after_restart_ms=%d", recovered.Milliseconds())
	burst := a.load(ctx, loadSpec{workers: 8, rpc: "echo", timeout: 3 * time.Second, total: 100})
	bs := a.summarize("remote-ingress-back", burst)
	report(t, s)
	report(t, bs)
	if s.ok != 0 || s.failures[contract.LabelConnectionRefused] != s.sent || s.sent == 0 {
		t.Errorf("with the remote ingress stopped, want every request to fail with %s: %s", contract.LabelConnectionRefused, s)
	}
	if slowest > time.Second {
		t.Errorf("slowest failure took %v; want well under the %v timeout", slowest, requestTimeout)
	}
	if recovered > 10*time.Second {
		t.Errorf("success again only %v after the ingress was started", recovered)
	}
	if bs.ok != bs.sent || bs.duplicates != 0 {
		t.Errorf("after the ingress came back: %s", bs)
	}
}

func testNATSRestart(t *testing.T, e *env, a, b *caller) {
	ctx := context.Background()
	stopLoad := a.startLoad(loadSpec{workers: 4, rpc: "echo", timeout: 2 * time.Second, pause: 50 * time.Millisecond})
	time.Sleep(time.Second)
	servers := append([]*service{e.natsB}, e.natsA[:]...)
	var stops, starts []func() error
	for _, s := range servers {
		stops = append(stops, func() error { return stop(ctx, s, 5*time.Second) })
		starts = append(starts, func() error { return restart(ctx, s) })
	}
	if err := parallel(stops...); err != nil {
		stopLoad()
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if err := parallel(starts...); err != nil {
		stopLoad()
		t.Fatal(err)
	}
	upAt := time.Now()
	fedErr := e.waitFederators(ctx, domainA, 3, 30*time.Second)
	fedsBack := time.Since(upAt)
	var inErr error
	for time.Since(upAt) < 30*time.Second {
		conns, err := connz(ctx, e.ports.monB, "")
		inErr = err
		if err == nil {
			names := make([]string, 0, len(conns))
			for _, c := range conns {
				names = append(names, c.Name)
			}
			joined := strings.Join(names, "|")
			if strings.Contains(joined, "ingress "+domainB) && strings.Contains(joined, "standin brig "+domainB) && strings.Contains(joined, "federator "+domainB) {
				inErr = nil
				break
			}
			inErr = fmt.Errorf("connections on B's NATS: %v", names)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitOK(t, a, "echo", 30*time.Second)
	recoveredAt := time.Now()
	waitOK(t, b, "echo", 30*time.Second)
	time.Sleep(2 * time.Second)
	outs := stopLoad()
	okAfter, failAfter := 0, 0
	for _, o := range outs {
		if o.start.After(recoveredAt.Add(500 * time.Millisecond)) {
			if o.ok() {
				okAfter++
			} else {
				failAfter++
			}
		}
	}
	s := a.summarize("nats-restart", outs)
	s.extra = fmt.Sprintf("federators_resubscribed_after_ms=%d success_again_after_ms=%d ok_after_recovery=%d failed_after_recovery=%d",
		fedsBack.Milliseconds(), recoveredAt.Sub(upAt).Milliseconds(), okAfter, failAfter)
	report(t, s)
	if fedErr != nil {
		t.Error(fedErr)
	}
	if inErr != nil {
		t.Error(inErr)
	}
	if s.duplicates != 0 {
		t.Errorf("%d duplicate replies", s.duplicates)
	}
	if okAfter == 0 || failAfter != 0 {
		t.Errorf("after recovery: %d ok, %d failed; want only successes", okAfter, failAfter)
	}
}

func testSIGTERM(t *testing.T, e *env, a *caller) {
	ctx := context.Background()
	target := e.fedA[2]
	stopLoad := a.startLoad(loadSpec{workers: 24, rpc: "slow", slowMs: 300, timeout: 5 * time.Second})
	time.Sleep(1500 * time.Millisecond)
	before, err := e.federatorsOf(ctx, domainA)
	if err != nil {
		t.Error(err)
	}
	termAt := time.Now()
	stopErr := stop(ctx, target, 20*time.Second) // SIGTERM, then waits for the exit
	took := time.Since(termAt)
	time.Sleep(1500 * time.Millisecond)
	outs := stopLoad()
	if stopErr != nil {
		t.Fatal(stopErr)
	}
	after, err := e.federatorsOf(ctx, domainA)
	if err != nil {
		t.Error(err)
	}
	inFlight := int64(-1)
	if v, ok := victim(before, after); ok {
		inFlight = v.OutMsgs - v.InMsgs
	}
	code, codeErr := exitCode(ctx, target)
	s := a.summarize("sigterm-federator", outs)
	s.extra = fmt.Sprintf("stopped=%s in_flight_at_sigterm=%d stop_took_ms=%d exit=%d", target.name, inFlight, took.Milliseconds(), code)
	report(t, s)
	if s.failed() != 0 || s.duplicates != 0 {
		t.Errorf("want no failure and no duplicate: %s", s)
	}
	if inFlight <= 0 {
		t.Errorf("the stopped federator had %d requests in flight; the test wants some", inFlight)
	}
	if codeErr != nil || code != 0 {
		t.Errorf("exit status %d (%v), want 0", code, codeErr)
	}
	lines, err := containerLog(ctx, target)
	if err != nil {
		t.Error(err)
	}
	if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, `"msg":"federator stopped"`) }) {
		t.Errorf("%s did not log a clean stop", target.name)
	}
}
