package federator

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

// clockStart is where the fake clocks of these tests start.
var clockStart = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// TestRequireDNSSECOutbound checks the federator's side of
// FED_REQUIRE_DNSSEC: an SRV answer of the target without the AD flag
// fails the request with discovery-failure before anything is sent, and
// the refusal is logged with the request id; an authentic answer, or no
// requirement, lets the request through.
func TestRequireDNSSECOutbound(t *testing.T) {
	tests := []struct {
		name      string
		require   bool
		authentic bool
		wantLabel string // empty: success
	}{
		{"required, no AD", true, false, contract.LabelDiscoveryFailure},
		{"required, AD", true, true, ""},
		{"not required, no AD", false, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			remote := &stubRemote{}
			logs := &testbed.LogBuffer{}
			tf := newTestFederator(t, testFederatorOptions{transport: remote, requireDNSSEC: tc.require,
				logger: slog.New(slog.NewJSONHandler(logs, nil))})
			tf.dns.SetAuthenticData(tc.authentic)
			const id = "req-dnssec-1"
			body, err := call(t, tf.f, benchTarget, id)
			if tc.wantLabel == "" {
				if err != nil || string(body) != `"ok"` {
					t.Fatalf("call = %q, %v; want success", body, err)
				}
				if n := remote.calls.Load(); n != 1 {
					t.Fatalf("%d requests sent, want 1", n)
				}
				return
			}
			var be *contract.Error
			if !errors.As(err, &be) || be.Label != tc.wantLabel || be.Code != contract.StatusOf(tc.wantLabel) {
				t.Fatalf("call = %q, %v; want %s", body, err, tc.wantLabel)
			}
			if !strings.Contains(be.Message, "FED_REQUIRE_DNSSEC") {
				t.Errorf("message %q does not name FED_REQUIRE_DNSSEC", be.Message)
			}
			if n := remote.calls.Load(); n != 0 {
				t.Fatalf("%d requests sent to the remote, want none", n)
			}
			lines, err := logs.JSONLines()
			if err != nil {
				t.Fatal(err)
			}
			logged := false
			for _, l := range lines {
				msg, _ := l["msg"].(string)
				if l["request_id"] == id && l["level"] == "WARN" && strings.Contains(msg, "DNSSEC") {
					logged = true
				}
			}
			if !logged {
				t.Errorf("no warning with request_id %s", id)
			}
		})
	}
}

// TestBackoffAfterRemote429 checks the backoff after a remote's 429: the
// 429 itself is the remote's error, further requests to that domain fail
// here with too-many-requests (saying until when) without reaching the
// remote, another domain is not affected, and once the Retry-After has
// elapsed requests go through again.
func TestBackoffAfterRemote429(t *testing.T) {
	const other = "c.example.com"
	remoteNow := clockStart.Add(-3 * time.Hour) // the remote's clock is off
	tests := []struct {
		name   string
		header http.Header
		wait   time.Duration
	}{
		{"delay-seconds", http.Header{"Retry-After": {"5"}}, 5 * time.Second},
		{"no Retry-After", nil, defaultRetryAfter},
		{"unparseable Retry-After", http.Header{"Retry-After": {"soon"}}, defaultRetryAfter},
		{"HTTP-date on the remote's clock", http.Header{
			"Date":        {remoteNow.Format(http.TimeFormat)},
			"Retry-After": {remoteNow.Add(7 * time.Second).Format(http.TimeFormat)},
		}, 7 * time.Second},
		{"over the cap", http.Header{"Retry-After": {"86400"}}, maxRetryAfter},
		{"zero: no backoff", http.Header{"Retry-After": {"0"}}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := testbed.NewClock(clockStart)
			remote := &stubRemote{}
			tf := newTestFederator(t, testFederatorOptions{transport: remote, targets: []string{benchTarget, other}, now: clock.Now})
			sent := func(want int32) {
				t.Helper()
				if n := remote.calls.Load(); n != want {
					t.Fatalf("%d requests sent, want %d", n, want)
				}
			}
			succeeds := func(target string) {
				t.Helper()
				if body, err := call(t, tf.f, target, bus.NewID()); err != nil || string(body) != `"ok"` {
					t.Fatalf("call to %s = %q, %v; want success", target, body, err)
				}
			}

			remote.answer(http.StatusTooManyRequests, tc.header)
			_, err := call(t, tf.f, benchTarget, "req-429")
			var be *contract.Error
			if !errors.As(err, &be) || be.Label != contract.LabelRemoteError || be.Inner == nil || be.Inner.Label != contract.LabelTooManyRequests {
				t.Fatalf("the 429 itself: %v; want %s with inner %s", err, contract.LabelRemoteError, contract.LabelTooManyRequests)
			}
			sent(1)
			remote.answer(http.StatusOK, nil)
			if tc.wait == 0 {
				succeeds(benchTarget)
				sent(2)
				return
			}

			_, err = call(t, tf.f, benchTarget, "req-fast")
			until := clockStart.Add(tc.wait).Format(backoffTimeFormat)
			if !errors.As(err, &be) || be.Label != contract.LabelTooManyRequests || be.Code != http.StatusTooManyRequests || be.Inner != nil {
				t.Fatalf("during the backoff: %v; want a local %s", err, contract.LabelTooManyRequests)
			}
			if !strings.Contains(be.Message, "asked us to wait") || !strings.Contains(be.Message, until) {
				t.Errorf("message %q does not say the remote asked us to wait until %s", be.Message, until)
			}
			sent(1)
			succeeds(other)
			sent(2)

			clock.Advance(tc.wait - time.Millisecond)
			if _, err := call(t, tf.f, benchTarget, "req-still"); !errors.Is(err, contract.ErrTooManyRequests) {
				t.Fatalf("just before the end of the backoff: %v; want %s", err, contract.LabelTooManyRequests)
			}
			sent(2)
			clock.Advance(time.Millisecond)
			succeeds(benchTarget)
			sent(3)
			if _, _, n, _ := tf.f.remotes.counts(); n != 0 {
				t.Errorf("%d backoff entries left after the end, want 0", n)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	ref := clockStart
	date := func(d time.Duration) string { return ref.Add(d).Format(http.TimeFormat) }
	tests := []struct {
		name string
		in   string
		want time.Duration
	}{
		{"absent", "", defaultRetryAfter},
		{"white space only", " \t", defaultRetryAfter},
		{"zero", "0", 0},
		{"one", "1", time.Second},
		{"thirty", "30", 30 * time.Second},
		{"leading zeros", "007", 7 * time.Second},
		{"optional white space", " 5\t", 5 * time.Second},
		{"at the cap", "60", maxRetryAfter},
		{"over the cap", "61", maxRetryAfter},
		{"huge", "86400000", maxRetryAfter},
		{"beyond uint64", strings.Repeat("9", 40), maxRetryAfter},
		{"negative", "-5", defaultRetryAfter},
		{"plus sign", "+5", defaultRetryAfter},
		{"fraction", "1.5", defaultRetryAfter},
		{"unit", "5s", defaultRetryAfter},
		{"inner space", "1 0", defaultRetryAfter},
		{"garbage", "soon", defaultRetryAfter},
		{"non-ASCII digits", "٥", defaultRetryAfter},
		{"IMF-fixdate", date(10 * time.Second), 10 * time.Second},
		{"rfc850-date", ref.Add(20 * time.Second).Format(time.RFC850), 20 * time.Second},
		{"asctime-date", ref.Add(30 * time.Second).Format(time.ANSIC), 30 * time.Second},
		{"date now", date(0), 0},
		{"date in the past", date(-time.Hour), 0},
		{"date far ahead", date(48 * time.Hour), maxRetryAfter},
		{"date with a wrong zone", ref.Add(10 * time.Second).Format(time.RFC1123Z), defaultRetryAfter},
		{"date garbage", "Fri, 32 Jan 2026 00:00:00 GMT", defaultRetryAfter},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseRetryAfter(tc.in, ref); got != tc.want {
				t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// FuzzParseRetryAfter checks that any Retry-After value gives a wait in
// [0, maxRetryAfter]: delay-seconds their value (capped), an HTTP-date its
// distance from the reference, anything else defaultRetryAfter.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "5", "61", "-1", "+5", "1.5", strings.Repeat("9", 30),
		"Fri, 02 Jan 2026 03:04:15 GMT", "Friday, 02-Jan-26 03:04:15 GMT", "Fri Jan  2 03:04:15 2026", "soon"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got := parseRetryAfter(v, clockStart)
		if got < 0 || got > maxRetryAfter {
			t.Fatalf("parseRetryAfter(%q) = %v, outside [0, %v]", v, got, maxRetryAfter)
		}
		trimmed := strings.Trim(v, " \t")
		if allDigits(trimmed) {
			want := maxRetryAfter
			if n, err := strconv.ParseUint(trimmed, 10, 64); err == nil && n < 60 {
				want = time.Duration(n) * time.Second
			}
			if got != want {
				t.Fatalf("parseRetryAfter(%q) = %v, want %v", v, got, want)
			}
			return
		}
		if d, err := http.ParseTime(trimmed); err == nil {
			if want := min(max(d.Sub(clockStart), 0), maxRetryAfter); got != want {
				t.Fatalf("parseRetryAfter(%q) = %v, want %v (a date)", v, got, want)
			}
			return
		}
		if got != defaultRetryAfter {
			t.Fatalf("parseRetryAfter(%q) = %v, want the default %v", v, got, defaultRetryAfter)
		}
	})
}

func TestBackoffs(t *testing.T) {
	type step struct {
		advance time.Duration
		set     string        // domain to set, with wait
		wait    time.Duration // from the clock's time
		active  []string      // domains that must be backed off now
		idle    []string      // domains that must not
		len     int           // entries (remotes waiting) after the step
	}
	tests := []struct {
		name  string
		max   int
		steps []step
	}{
		{"expiry", 10, []step{
			{set: "b.test", wait: time.Second, active: []string{"b.test"}, idle: []string{"c.test"}, len: 1},
			{advance: 999 * time.Millisecond, active: []string{"b.test"}, len: 1},
			{advance: time.Millisecond, idle: []string{"b.test"}, len: 0},
		}},
		{"a wait in the past is ignored", 10, []step{
			{set: "b.test", wait: 0, idle: []string{"b.test"}, len: 0},
			{set: "b.test", wait: -time.Second, idle: []string{"b.test"}, len: 0},
		}},
		{"a later wait extends, an earlier one does not shorten", 10, []step{
			{set: "b.test", wait: 2 * time.Second, len: 1},
			{set: "b.test", wait: 5 * time.Second, len: 1},
			{set: "b.test", wait: time.Second, len: 1},
			{advance: 4 * time.Second, active: []string{"b.test"}, len: 1},
			{advance: time.Second, idle: []string{"b.test"}, len: 0},
		}},
		{"the cap evicts the soonest-expiring", 3, []step{
			{set: "a.test", wait: 3 * time.Second, len: 1},
			{set: "b.test", wait: time.Second, len: 2},
			{set: "c.test", wait: 2 * time.Second, len: 3},
			{set: "d.test", wait: 5 * time.Second, active: []string{"a.test", "c.test", "d.test"}, idle: []string{"b.test"}, len: 3},
			{set: "e.test", wait: 4 * time.Second, active: []string{"a.test", "d.test", "e.test"}, idle: []string{"c.test"}, len: 3},
		}},
		{"expired entries make room before eviction", 2, []step{
			{set: "a.test", wait: time.Second, len: 1},
			{set: "b.test", wait: 10 * time.Second, len: 2},
			{advance: 2 * time.Second, set: "c.test", wait: time.Second, active: []string{"b.test", "c.test"}, idle: []string{"a.test"}, len: 2},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := testbed.NewClock(clockStart)
			b := newRemotes(0, 3, tc.max, clock.Now)
			for i, s := range tc.steps {
				clock.Advance(s.advance)
				if s.set != "" {
					b.wait(s.set, clock.Now().Add(s.wait))
				}
				for _, d := range s.active {
					if _, ok := b.waiting(d); !ok {
						t.Errorf("step %d: %s not backed off", i, d)
					}
				}
				for _, d := range s.idle {
					if until, ok := b.waiting(d); ok {
						t.Errorf("step %d: %s backed off until %v", i, d, until)
					}
				}
				if records, _, n, _ := b.counts(); n != s.len || records > tc.max {
					t.Errorf("step %d: %d entries (%d records), want %d (at most %d records)", i, n, records, s.len, tc.max)
				}
			}
		})
	}
}

// TestBackoffsStayBounded sets far more domains than the cap, all still
// waiting: the count stays at the cap, and the latest ones are kept.
func TestBackoffsStayBounded(t *testing.T) {
	clock := testbed.NewClock(clockStart)
	b := newRemotes(0, 3, maxRecords, clock.Now)
	const total = 3 * maxRecords
	for i := range total {
		// Each later domain waits longer: the earliest ones are evicted.
		b.wait(fmt.Sprintf("d%d.test", i), clock.Now().Add(time.Minute+time.Duration(i)*time.Millisecond))
	}
	if records, _, n, _ := b.counts(); n != maxRecords || records != maxRecords {
		t.Fatalf("%d entries (%d records), want the cap %d", n, records, maxRecords)
	}
	if _, ok := b.waiting("d0.test"); ok {
		t.Error("the soonest-expiring domain was kept")
	}
	if _, ok := b.waiting(fmt.Sprintf("d%d.test", total-1)); !ok {
		t.Error("the latest domain was evicted")
	}
	clock.Advance(time.Hour)
	if _, ok := b.waiting("any.test"); ok {
		t.Error("a domain waits after every wait ended")
	}
	if records, pinned, n, _ := b.counts(); n != 0 || pinned != 0 || records > maxRecords {
		t.Errorf("%d entries, %d pinned records (of %d) after every wait ended, want 0", n, pinned, records)
	}
}

// TestSelfCalls: a request whose target is FED_DOMAIN is refused with
// federation-denied before anything is sent, even when the strategy
// allows the domain, unless FED_ALLOW_SELF_CALLS.
func TestSelfCalls(t *testing.T) {
	for _, allow := range []bool{false, true} {
		t.Run("FED_ALLOW_SELF_CALLS="+strconv.FormatBool(allow), func(t *testing.T) {
			remote := &stubRemote{}
			tf := newTestFederator(t, testFederatorOptions{transport: remote, targets: []string{benchOrigin, benchTarget}, allowSelf: allow})
			body, err := call(t, tf.f, benchOrigin, "req-self")
			if allow {
				if err != nil || string(body) != `"ok"` {
					t.Fatalf("call = %q, %v; want success", body, err)
				}
				return
			}
			var be *contract.Error
			if !errors.As(err, &be) || be.Label != contract.LabelFederationDenied || !strings.Contains(be.Message, "FED_ALLOW_SELF_CALLS") {
				t.Fatalf("call = %q, %v; want federation-denied naming FED_ALLOW_SELF_CALLS", body, err)
			}
			if n := remote.calls.Load(); n != 0 {
				t.Fatalf("%d requests sent, want none", n)
			}
			// Another domain is not concerned.
			if _, err := call(t, tf.f, benchTarget, "req-other"); err != nil {
				t.Fatalf("call to %s: %v", benchTarget, err)
			}
		})
	}
}

// TestMaxResponseClampedToNATS: FED_MAX_RESPONSE_BYTES larger than what a
// NATS message carries is lowered to it when the federator is made, and
// the federator says so once, at INFO, with both values.
func TestMaxResponseClampedToNATS(t *testing.T) {
	logs := &testbed.LogBuffer{}
	tf := newTestFederator(t, testFederatorOptions{transport: &stubRemote{}, logger: slog.New(slog.NewJSONHandler(logs, nil))})
	want := tf.nc.MaxPayload() - bus.HeaderRoom
	if got := tf.f.cfg.MaxResponseBytes; got != want || tf.f.client.maxResponse != want {
		t.Fatalf("MaxResponseBytes = %d (client %d), want %d", got, tf.f.client.maxResponse, want)
	}
	lines, err := logs.JSONLines()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range lines {
		if msg, _ := l["msg"].(string); strings.Contains(msg, "FED_MAX_RESPONSE_BYTES") {
			n++
			if l["level"] != "INFO" || l["configured"] != float64(NewConfig().MaxResponseBytes) || l["max_response_bytes"] != float64(want) {
				t.Errorf("log line %v, want INFO with configured and max_response_bytes", l)
			}
		}
	}
	if n != 1 {
		t.Errorf("%d lines about FED_MAX_RESPONSE_BYTES, want 1:\n%s", n, logs.String())
	}
}
