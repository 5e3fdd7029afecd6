package federator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

// flakyRemote stands for a remote ingress that is down (connections
// refused), up, or up and refusing the requests with its own error.
type flakyRemote struct{ mode atomic.Int32 }

const (
	remoteUp = iota
	remoteDown
	remoteRefuses
)

func (r *flakyRemote) RoundTrip(req *http.Request) (*http.Response, error) {
	var status int
	var body []byte
	switch r.mode.Load() {
	case remoteDown:
		return nil, &connectError{err: errors.New("dial tcp 192.0.2.1:443: connect: connection refused")}
	case remoteRefuses:
		status, body = http.StatusBadRequest, contract.Errorf(contract.LabelFederationDenied, "federation with a.example.com is not allowed").JSON()
	default:
		status, body = http.StatusOK, []byte(`"ok"`)
	}
	return &http.Response{StatusCode: status, Proto: "HTTP/2.0", ProtoMajor: 2,
		Header: http.Header{contract.HTTPContentType: {contract.ContentTypeJSON}},
		Body:   io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)), Request: req}, nil
}

// logLines returns the lines of buf whose msg is msg.
func logLines(t *testing.T, buf *testbed.LogBuffer, msg string) []map[string]any {
	t.Helper()
	lines, err := buf.JSONLines()
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, l := range lines {
		if l["msg"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// TestRemoteStateLogs: a remote that is down gives one WARN when it goes
// down and one when it comes back, and one line per request (no "trying
// next" without a next target); a remote's own error label is logged on
// the federator's side.
func TestRemoteStateLogs(t *testing.T) {
	var buf testbed.LogBuffer
	remote := &flakyRemote{}
	tf := newTestFederator(t, testFederatorOptions{transport: remote,
		logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	send := func(n int) { sendRequests(t, tf.f, n) }
	const down, up = "remote unreachable: its requests fail until one reaches it again", "remote reachable again"

	remote.mode.Store(remoteDown)
	send(5)
	downs := logLines(t, &buf, down)
	if len(downs) != 1 || downs[0]["level"] != "WARN" || downs[0]["remote"] != benchTarget || downs[0]["reason"] != contract.LabelConnectionRefused {
		t.Errorf("lines %q: %v, want one WARN with the remote and the reason", down, downs)
	}
	if n := len(logLines(t, &buf, "request failed")); n != 5 {
		t.Errorf("%d request lines for 5 requests", n)
	}
	if n := len(logLines(t, &buf, "target unreachable, trying next")); n != 0 {
		t.Errorf("%d lines of trying a next target that does not exist", n)
	}

	remote.mode.Store(remoteUp)
	send(3)
	ups := logLines(t, &buf, up)
	if len(ups) != 1 || ups[0]["level"] != "WARN" || ups[0]["reason_was"] != contract.LabelConnectionRefused {
		t.Errorf("lines %q: %v, want one WARN", up, ups)
	}

	remote.mode.Store(remoteRefuses)
	send(1)
	failed := logLines(t, &buf, "request failed")
	last := failed[len(failed)-1]
	if last["label"] != contract.LabelRemoteError || last["remote_label"] != contract.LabelFederationDenied || last["remote_err"] == nil {
		t.Errorf("request line %v, want the remote's label and message", last)
	}
	if n := len(logLines(t, &buf, down)) + len(logLines(t, &buf, up)); n != 2 {
		t.Errorf("%d state lines, want 2: a remote that answers with an error is reachable", n)
	}
}

// TestReachability: which outcomes change a remote's judgement (the one
// rule of requests and notification deliveries: FED_REMOTE_DOWN_AFTER
// unreachable failures in a row, here 3, make it down; any answer makes
// it up), and the records that are kept for it.
func TestReachability(t *testing.T) {
	refused := contract.Errorf(contract.LabelConnectionRefused, "refused")
	timeout := contract.Errorf(contract.LabelTimeout, "no answer")
	tlsErr := contract.Errorf(contract.LabelTLSError, "x")
	discovery := contract.Errorf(contract.LabelDiscoveryFailure, "x")
	remoteTimeout := contract.RemoteError(contract.Errorf(contract.LabelTimeout, "slow component"))
	tests := []struct {
		name     string
		outcomes []error
		want     []string // one per outcome: "down", "up" or ""
	}{
		{name: "refused then success", outcomes: []error{refused, refused, refused, refused, nil, nil}, want: []string{"", "", "down", "", "up", ""}},
		{name: "TLS and discovery failures", outcomes: []error{tlsErr, tlsErr, tlsErr, nil, discovery, discovery, discovery}, want: []string{"", "", "down", "up", "", "", "down"}},
		{name: "every kind counts in one row", outcomes: []error{refused, timeout, tlsErr, nil, discovery, timeout, refused}, want: []string{"", "", "down", "up", "", "", "down"}},
		{name: "timeouts in a row", outcomes: []error{timeout, timeout, timeout, timeout}, want: []string{"", "", "down", ""}},
		{name: "a success breaks the row", outcomes: []error{timeout, timeout, nil, timeout, timeout}, want: []string{"", "", "", "", ""}},
		{name: "a remote timeout is an answer", outcomes: []error{refused, refused, refused, remoteTimeout}, want: []string{"", "", "down", "up"}},
		{name: "a remote error is an answer", outcomes: []error{refused, refused, refused, contract.RemoteError(contract.Errorf(contract.LabelFederationDenied, "x"))}, want: []string{"", "", "down", "up"}},
		{name: "a remote error breaks the row", outcomes: []error{refused, refused, contract.RemoteError(contract.Errorf(contract.LabelServerError, "x")), refused}, want: []string{"", "", "", ""}},
		{name: "local refusals say nothing", outcomes: []error{contract.Errorf(contract.LabelInvalidDomain, "x"), contract.Errorf(contract.LabelFederationDenied, "x")}, want: []string{"", ""}},
		{name: "local refusals do not break the row", outcomes: []error{refused, refused, contract.Errorf(contract.LabelInvalidDomain, "x"), refused}, want: []string{"", "", "", "down"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := newRemotes(0, 3, maxRecords, time.Now)
			for i, err := range tt.outcomes {
				r, cerr := rs.acquire(benchTarget)
				if cerr != nil {
					t.Fatal(cerr)
				}
				o := rs.outcome(r, time.Now(), err)
				rs.release(r)
				got := ""
				if o.changed && o.ch.down {
					got = "down"
				} else if o.changed {
					got = "up"
				}
				if got != tt.want[i] {
					t.Errorf("outcome %d (%v): change %q, want %q", i, err, got, tt.want[i])
				}
			}
		})
	}
	t.Run("an exchange started before the last change says nothing", func(t *testing.T) {
		clock := testbed.NewClock(clockStart)
		rs := newRemotes(0, 3, maxRecords, clock.Now)
		r, _ := rs.acquire(benchTarget)
		defer rs.release(r)
		stuck := clock.Now() // a request that hangs while the remote goes down
		clock.Advance(time.Second)
		for range 3 {
			rs.outcome(r, clock.Now(), refused)
		}
		clock.Advance(time.Second)
		if o := rs.outcome(r, stuck, nil); o.fresh || o.changed {
			t.Errorf("an answer to a request started before the remote was judged down: %+v", o)
		}
		clock.Advance(time.Second)
		back := clock.Now()
		if o := rs.outcome(r, back, nil); !o.changed || o.ch.down {
			t.Fatalf("a fresh answer: %+v, want up", o)
		}
		for range 5 { // requests stuck in timeouts while the remote came back
			if o := rs.outcome(r, stuck, timeout); o.fresh || o.changed {
				t.Errorf("a timeout of a request started before the remote came back: %+v", o)
			}
		}
		if rec := rs.records(1); len(rec) != 1 || rec[0].LastLabel != contract.LabelTimeout {
			t.Errorf("records %+v: the last failure is remembered all the same", rec)
		}
	})
	t.Run("a down remote's record is pinned until it is up", func(t *testing.T) {
		rs := newRemotes(0, 3, maxRecords, time.Now)
		for _, err := range []error{refused, refused, refused, nil} {
			r, _ := rs.acquire(benchTarget)
			rs.outcome(r, time.Now(), err)
			rs.release(r)
			if _, pinned, _, down := rs.counts(); err != nil && r.down && (pinned != 1 || down != 1) {
				t.Errorf("a down remote's record is not kept: %d pinned, %d down", pinned, down)
			}
		}
		if records, pinned, _, down := rs.counts(); pinned != 0 || down != 0 || records != 1 {
			t.Errorf("%d records (%d pinned, %d down), want the one, not pinned", records, pinned, down)
		}
		rec := rs.records(maxStatsRemotes)
		if len(rec) != 1 || rec[0].Domain != benchTarget || rec[0].LastSuccess.IsZero() || rec[0].LastLabel != contract.LabelConnectionRefused {
			t.Errorf("records %+v", rec)
		}
	})
}

// TestRemoteStatusOncePerChange: four workers share the status bucket.
// Three of them see a remote refuse its connections: one down event and
// one WARN line, however many workers judged it down. The fourth, which
// never saw it fail, gets an answer while the bucket says down: one up
// event and one WARN line; the records of the other three are up again
// (two failures of theirs change nothing).
func TestRemoteStatusOncePerChange(t *testing.T) {
	url, nc, _ := startJetStream(t)
	var buf testbed.LogBuffer
	logger := slog.New(slog.NewJSONHandler(&buf, nil))
	remote := &flakyRemote{}
	var workers []*Federator
	for range 4 {
		tf := newTestFederator(t, testFederatorOptions{transport: remote, logger: logger, natsURL: url})
		tf.f.status.start(context.Background(), contract.DefaultStatusBucket, 1)
		t.Cleanup(tf.f.status.stop)
		workers = append(workers, tf.f)
	}
	status, err := workers[0].subjects.Status(benchTarget)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		events []string
	)
	sub, err := nc.Subscribe(status, func(m *nats.Msg) {
		if ev, err := bus.Decode(m); err == nil {
			mu.Lock()
			events = append(events, ev.Type)
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// settled: every worker knows the bucket's state of the remote, and
	// writes nothing; then the events published are delivered.
	settled := func(state string) {
		t.Helper()
		waitFor(t, 10*time.Second, "every worker to see the remote "+state, func() bool {
			for _, f := range workers {
				f.status.mu.Lock()
				g, pending := f.status.global[benchTarget], len(f.status.pending)
				f.status.mu.Unlock()
				if g.State != state || pending > 0 {
					return false
				}
			}
			return true
		})
		for _, f := range workers {
			if err := f.deps.NATS.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	seen := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(events)
	}

	remote.mode.Store(remoteDown)
	for range 5 {
		for _, f := range workers[:3] {
			sendRequests(t, f, 1)
		}
	}
	settled(StateDown)
	if got := seen(); !slices.Equal(got, []string{contract.TypeRemoteDown}) {
		t.Fatalf("events %v, want one %s", got, contract.TypeRemoteDown)
	}
	downs := logLines(t, &buf, logRemoteDown)
	if len(downs) != 1 || downs[0]["event"] != contract.TypeRemoteDown || downs[0]["reason"] != contract.LabelConnectionRefused || downs[0]["request_id"] == "" {
		t.Errorf("lines %q: %v, want one, of the worker whose write landed", logRemoteDown, downs)
	}

	remote.mode.Store(remoteUp)
	sendRequests(t, workers[3], 1)
	settled(StateUp)
	if got := seen(); !slices.Equal(got, []string{contract.TypeRemoteDown, contract.TypeRemoteUp}) {
		t.Fatalf("events %v, want %s then %s", got, contract.TypeRemoteDown, contract.TypeRemoteUp)
	}
	ups := logLines(t, &buf, logRemoteUp)
	if len(ups) != 1 || ups[0]["event"] != contract.TypeRemoteUp || ups[0]["reason_was"] != contract.LabelConnectionRefused {
		t.Errorf("lines %q: %v, want one, of the worker whose write landed", logRemoteUp, ups)
	}
	waitFor(t, 10*time.Second, "the records judged down to be up again", func() bool {
		for _, f := range workers {
			if _, _, _, down := f.remotes.counts(); down != 0 {
				return false
			}
		}
		return true
	})

	remote.mode.Store(remoteDown)
	sendRequests(t, workers[0], 2)
	settled(StateUp)
	if got := seen(); len(got) != 2 {
		t.Errorf("events %v after two failures of a worker that saw the remote up again, want no more", got)
	}
}

// TestRemoteStatusWrittenAgain: a worker whose write of a down change to
// the status bucket failed (here the bucket is gone) writes it at its
// next failure once the bucket is back: the change is not lost, and the
// event is published once.
func TestRemoteStatusWrittenAgain(t *testing.T) {
	url, nc, js := startJetStream(t)
	var buf testbed.LogBuffer
	remote := &flakyRemote{}
	tf := newTestFederator(t, testFederatorOptions{transport: remote, logger: slog.New(slog.NewJSONHandler(&buf, nil)), natsURL: url})
	f := tf.f
	f.status.start(context.Background(), contract.DefaultStatusBucket, 1)
	t.Cleanup(f.status.stop)

	status, err := f.subjects.Status(benchTarget)
	if err != nil {
		t.Fatal(err)
	}
	var events atomic.Int64
	sub, err := nc.Subscribe(status, func(*nats.Msg) { events.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	idle := func() bool {
		f.status.mu.Lock()
		defer f.status.mu.Unlock()
		return len(f.status.pending) == 0
	}

	if err := js.DeleteKeyValue(context.Background(), contract.DefaultStatusBucket); err != nil {
		t.Fatal(err)
	}
	remote.mode.Store(remoteDown)
	sendRequests(t, f, 3) // judged down; the write fails
	waitFor(t, 10*time.Second, "the failed write", func() bool {
		return idle() && len(logLines(t, &buf, "remote status not recorded")) == 1
	})
	if _, _, _, down := f.remotes.counts(); down != 1 {
		t.Fatalf("%d records judged down, want 1", down)
	}
	if _, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: contract.DefaultStatusBucket, History: 1}); err != nil {
		t.Fatal(err)
	}
	sendRequests(t, f, 1) // still down: written now
	waitFor(t, 10*time.Second, "the down event", func() bool { return events.Load() == 1 })
	waitFor(t, 10*time.Second, "the write to end", idle)
	sendRequests(t, f, 2) // written already: nothing more
	if err := f.deps.NATS.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the writes to end", idle)
	if n := events.Load(); n != 1 {
		t.Errorf("%d events, want one %s", n, contract.TypeRemoteDown)
	}
}
