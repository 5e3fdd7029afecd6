package federator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

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
	subject, err := tf.f.subjects.Out("brig", "echo", benchTarget)
	if err != nil {
		t.Fatal(err)
	}
	send := func(n int) {
		for range n {
			tf.f.handle(context.Background(), subject, bus.Event{ID: bus.NewID(), Source: "/brig", Type: contract.TypeRequest, Data: []byte(`{}`)})
		}
	}
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

// TestReachability: which outcomes change a remote's state, and the
// records that are kept for it.
func TestReachability(t *testing.T) {
	refused := contract.Errorf(contract.LabelConnectionRefused, "refused")
	timeout := contract.Errorf(contract.LabelTimeout, "no answer")
	remoteTimeout := contract.RemoteError(contract.Errorf(contract.LabelTimeout, "slow component"))
	tests := []struct {
		name     string
		outcomes []error
		want     []string // one per outcome: "down", "up" or ""
	}{
		{name: "refused then success", outcomes: []error{refused, refused, nil, nil}, want: []string{"down", "", "up", ""}},
		{name: "TLS and discovery failures", outcomes: []error{contract.Errorf(contract.LabelTLSError, "x"), nil, contract.Errorf(contract.LabelDiscoveryFailure, "x")}, want: []string{"down", "up", "down"}},
		{name: "timeouts in a row", outcomes: []error{timeout, timeout, timeout, timeout}, want: []string{"", "", "down", ""}},
		{name: "a success breaks the row", outcomes: []error{timeout, timeout, nil, timeout, timeout}, want: []string{"", "", "", "", ""}},
		{name: "a remote timeout is an answer", outcomes: []error{refused, remoteTimeout}, want: []string{"down", "up"}},
		{name: "a remote error is an answer", outcomes: []error{refused, contract.RemoteError(contract.Errorf(contract.LabelFederationDenied, "x"))}, want: []string{"down", "up"}},
		{name: "local refusals say nothing", outcomes: []error{contract.Errorf(contract.LabelInvalidDomain, "x"), contract.Errorf(contract.LabelFederationDenied, "x")}, want: []string{"", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := newRemotes(0, maxWaits, time.Now)
			for i, err := range tt.outcomes {
				r, cerr := rs.acquire(benchTarget)
				if cerr != nil {
					t.Fatal(cerr)
				}
				ch, ok := rs.outcome(r, err)
				rs.release(r)
				got := ""
				if ok && ch.Down {
					got = "down"
				} else if ok {
					got = "up"
				}
				if got != tt.want[i] {
					t.Errorf("outcome %d (%v): change %q, want %q", i, err, got, tt.want[i])
				}
			}
		})
	}
	t.Run("records of reachable remotes are dropped", func(t *testing.T) {
		rs := newRemotes(0, maxWaits, time.Now)
		for _, err := range []error{refused, nil} {
			r, _ := rs.acquire(benchTarget)
			rs.outcome(r, err)
			rs.release(r)
			if err != nil && rs.len() != 1 {
				t.Errorf("a down remote's record is not kept")
			}
		}
		if rs.len() != 0 {
			t.Errorf("%d records left", rs.len())
		}
	})
}
