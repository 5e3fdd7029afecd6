package bus_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
)

// newRequester returns a Requester on nc, closed when the test ends.
func newRequester(tb testing.TB, nc *nats.Conn) *bus.Requester {
	tb.Helper()
	r, err := bus.NewRequester(nc, nil, discardLogger())
	if err != nil {
		tb.Fatalf("NewRequester: %v", err)
	}
	tb.Cleanup(func() { _ = r.Close() })
	return r
}

// subscribe runs fn for each message on subject, on its own connection.
func subscribe(tb testing.TB, url, subject string, fn nats.MsgHandler) {
	tb.Helper()
	nc := connect(tb, url)
	if _, err := nc.Subscribe(subject, fn); err != nil {
		tb.Fatalf("subscribe %s: %v", subject, err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatalf("flush: %v", err)
	}
}

func TestRequester(t *testing.T) {
	url := startNATS(t)
	subscribe(t, url, "echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	subscribe(t, url, "silent", func(*nats.Msg) {})
	r := newRequester(t, connect(t, url))

	for _, tc := range []struct {
		name    string
		subject string
		timeout time.Duration
		want    error // nil: the echo comes back
	}{
		{"reply", "echo", 5 * time.Second, nil},
		{"no responders", "nobody", 5 * time.Second, nats.ErrNoResponders},
		{"no reply in time", "silent", 50 * time.Millisecond, context.DeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte("ping " + tc.name)
			reply, err := r.RequestMsgWithContext(testCtx(t, tc.timeout), &nats.Msg{Subject: tc.subject, Data: body})
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("error = %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			if string(reply.Data) != string(body) {
				t.Errorf("reply = %q, want %q", reply.Data, body)
			}
		})
	}
}

// TestRequesterMatchesReplies: many concurrent requests, each gets its own
// reply, whatever order the replies come back in.
func TestRequesterMatchesReplies(t *testing.T) {
	url := startNATS(t)
	// Reply from goroutines, so that replies come back out of order.
	subscribe(t, url, "echo", func(m *nats.Msg) { go func() { _ = m.Respond(m.Data) }() })
	r := newRequester(t, connect(t, url))
	ctx := testCtx(t, 10*time.Second)
	var wg sync.WaitGroup
	var wrong atomic.Int32
	for i := range 2000 {
		wg.Go(func() {
			body := fmt.Appendf(nil, "request %d", i)
			reply, err := r.RequestMsgWithContext(ctx, &nats.Msg{Subject: "echo", Data: body})
			if err != nil || string(reply.Data) != string(body) {
				wrong.Add(1)
			}
		})
	}
	wg.Wait()
	if n := wrong.Load(); n != 0 {
		t.Errorf("%d of 2000 requests failed or got another request's reply", n)
	}
}

func TestRequesterClose(t *testing.T) {
	url := startNATS(t)
	nc := connect(t, url)
	before := runtime.NumGoroutine()
	r, err := bus.NewRequester(nc, nil, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err = r.RequestMsgWithContext(testCtx(t, time.Second), &nats.Msg{Subject: "echo"})
	if !errors.Is(err, bus.ErrRequesterClosed) {
		t.Errorf("request after Close: %v, want ErrRequesterClosed", err)
	}
	waitFor(t, 5*time.Second, "the outbox goroutine to end", func() bool { return runtime.NumGoroutine() <= before })
}

// TestOutboxDeliversEverything: what is queued before Close and what is
// published after it all reaches the subscriber, once.
func TestOutboxDeliversEverything(t *testing.T) {
	url := startNATS(t)
	var got atomic.Int64
	subscribe(t, url, "sink", func(*nats.Msg) { got.Add(1) })
	nc := connect(t, url)
	o, err := bus.NewOutbox(nc, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	const before, after = 20000, 10
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range before / 4 {
				o.Publish(&nats.Msg{Subject: "sink", Data: []byte("x")}, "")
			}
		})
	}
	wg.Wait()
	o.Close()
	o.Close() // idempotent
	for range after {
		o.Publish(&nats.Msg{Subject: "sink", Data: []byte("late")}, "")
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "every message", func() bool { return got.Load() >= before+after })
	if n := got.Load(); n != before+after {
		t.Errorf("received %d messages, want %d", n, before+after)
	}
}

// TestRequesterCloseEndsWaitingRequests: a request waiting for a reply
// that will never come ends when the Requester is closed, not at its
// deadline.
func TestRequesterCloseEndsWaitingRequests(t *testing.T) {
	url := startNATS(t)
	got := make(chan struct{}, 1)
	subscribe(t, url, "silent", func(*nats.Msg) { got <- struct{}{} })
	r, err := bus.NewRequester(connect(t, url), nil, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := r.RequestMsgWithContext(testCtx(t, time.Hour), &nats.Msg{Subject: "silent"})
		done <- err
	}()
	<-got // the request is out and waiting
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, bus.ErrRequesterClosed) {
			t.Errorf("waiting request ended with %v, want ErrRequesterClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting request did not end on Close")
	}
}
