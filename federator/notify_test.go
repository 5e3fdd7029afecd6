package federator

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/contract"
)

func TestBackoff(t *testing.T) {
	lo, hi := time.Second, time.Minute
	for attempts, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 7: time.Minute, 100: time.Minute} {
		for range 50 {
			if got := backoff(attempts, lo, hi); got < want/2 || got > want {
				t.Fatalf("backoff(%d) = %s, want between %s and %s", attempts, got, want/2, want)
			}
		}
	}
}

func TestConsumerName(t *testing.T) {
	if got := consumerName("b.example.com"); got != "d_b_example_com" {
		t.Fatalf("consumerName = %q", got)
	}
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + "." + strings.Repeat("d", 61)
	if n := len(consumerName(long)); n > 255 {
		t.Fatalf("consumer name of a 253-character domain has %d characters", n)
	}
}

// fakeMsg is a fetched message of a given size.
type fakeMsg struct {
	jetstream.Msg
	data []byte
}

func (m fakeMsg) Data() []byte { return m.data }

func TestBatchLen(t *testing.T) {
	items := func(sizes ...int) []*item {
		var out []*item
		for _, n := range sizes {
			out = append(out, &item{msg: fakeMsg{data: make([]byte, n)}})
		}
		return out
	}
	cases := []struct {
		name    string
		items   []*item
		entries int
		bytes   int64
		want    int
	}{
		{"all fit", items(10, 10, 10), 10, 1 << 20, 3},
		{"entries", items(10, 10, 10), 2, 1 << 20, 2},
		{"bytes", items(1000, 1000, 1000), 10, 2600, 2},
		{"one too large still goes", items(5000, 10), 10, 1024, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := batchLen(tc.items, tc.entries, tc.bytes); got != tc.want {
				t.Fatalf("batchLen = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestVerdict(t *testing.T) {
	tf := newTestFederator(t, testFederatorOptions{transport: &stubRemote{}})
	n := newNotifier(tf.f, nil)
	cases := []struct {
		status int
		header http.Header
		ok     bool
		retry  bool
		wait   time.Duration
	}{
		{status: 200, ok: true},
		{status: 204, ok: true},
		{status: 400},
		{status: 403},
		{status: 404},
		{status: 429, retry: true, header: http.Header{contract.HTTPRetryAfter: {"7"}}, wait: 7 * time.Second},
		{status: 500, retry: true},
		{status: 503, retry: true},
		{status: 533, retry: true},
	}
	for _, tc := range cases {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			h := tc.header
			if h == nil {
				h = http.Header{}
			}
			d := n.verdict(benchTarget, tc.status, h, contract.Errorf(contract.LabelFederationDenied, "no").JSON())
			if (d.err == nil) != tc.ok || d.retry != tc.retry || d.wait != tc.wait {
				t.Fatalf("verdict %+v", d)
			}
			if d.err != nil && (d.err.Label != contract.LabelRemoteError || d.err.Inner == nil) {
				t.Fatalf("error %v", d.err)
			}
		})
	}
	if _, waiting := tf.f.remotes.waiting(benchTarget); !waiting {
		t.Fatal("a 429 of a notification does not hold the remote's requests")
	}
	for label, retry := range map[string]bool{contract.LabelConnectionRefused: true, contract.LabelTimeout: true, contract.LabelDiscoveryFailure: true,
		contract.LabelInvalidDomain: true, contract.LabelTLSError: true, contract.LabelFederationDenied: false} {
		if d := n.networkFailure(contract.Errorf(label, "x")); d.retry != retry {
			t.Errorf("%s: retry %v", label, d.retry)
		}
	}
}

func TestNotifyConfigValidate(t *testing.T) {
	c := defaultNotifyConfig()
	if err := c.validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	bad := NotifyConfig{Stream: "a.b", DeadStream: "a.b", Batch: 0, RetryMin: time.Second, RetryMax: time.Millisecond, LeaseTTL: time.Second}
	err := bad.validate()
	for _, want := range []string{"FED_NOTIFY_STREAM", "must differ", "FED_NOTIFY_DUPLICATE_WINDOW", "FED_NOTIFY_BATCH ",
		"FED_NOTIFY_BATCH_BYTES", "FED_NOTIFY_RETRY_MAX", "FED_NOTIFY_CONCURRENCY", "FED_NOTIFY_LEASE_TTL", "FED_NOTIFY_SCAN_INTERVAL"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}
