package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/fedtest"
)

// notifyEnv is the configuration of the notification tests: short
// retries and leases, so that the tests are quick.
func notifyEnv(extra map[string]string) map[string]string {
	env := map[string]string{
		"FED_INGRESS_ORIGIN_RATE": "0", "FED_INGRESS_ORIGIN_CONCURRENCY": "0", "FED_INGRESS_CERT_RATE": "0", "FED_INGRESS_CERT_CONCURRENCY": "0",
		"FED_NOTIFY_RETRY_MIN": "100ms", "FED_NOTIFY_RETRY_MAX": "1s",
		"FED_NOTIFY_LEASE_TTL": "3s", "FED_NOTIFY_SCAN_INTERVAL": "2s",
	}
	for k, v := range extra {
		env[k] = v
	}
	return env
}

// newNotifyWorld starts A and B (allowing each other, and A the extra
// domains) with notifyEnv; A has federators workers.
func newNotifyWorld(tb testing.TB, federators int, envA, envB map[string]string, extraAllowA ...string) *world {
	tb.Helper()
	return newWorldWith(tb, fedtest.BackendOptions{Federators: federators, Env: notifyEnv(envA)},
		fedtest.BackendOptions{Env: notifyEnv(envB)}, extraAllowA...)
}

// received collects the notifications a component handled.
type received struct {
	mu   sync.Mutex
	list []*bus.Notification
	seen map[string]int // by id
}

func (r *received) add(n *bus.Notification) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]int{}
	}
	r.seen[n.ID]++
	r.list = append(r.list, n)
}

func (r *received) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.list)
}

func (r *received) snapshot() []*bus.Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*bus.Notification(nil), r.list...)
}

// serveNotifications collects the notifications of component on be until
// the test ends.
func serveNotifications(tb testing.TB, be *fedtest.Backend, component string) *received {
	tb.Helper()
	r := &received{}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := bus.ServeNotifications(ctx, be.JetStream, be.Subjects, component, func(_ context.Context, n *bus.Notification) error {
		r.add(n)
		return nil
	}, bus.NotificationOptions{Logger: testLogger(tb), AckWait: 3 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		sctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		_ = srv.Shutdown(sctx)
		cancel()
	})
	return r
}

// notification is the body the tests publish.
type notification struct {
	N int `json:"n"`
}

// publish publishes count notifications from galley on A to B, over rpcs
// in turn, with bodies {"n": from..from+count-1}; it returns their ids in
// publish order.
func publish(tb testing.TB, a *fedtest.Backend, target string, from, count int, rpcs ...string) []string {
	tb.Helper()
	if len(rpcs) == 0 {
		rpcs = []string{"on-member-join", "on-conversation-updated", "on-typing"}
	}
	waitFor(tb, 10*time.Second, "the notification stream", func() bool {
		_, err := a.JetStream.Stream(context.Background(), contract.DefaultNotifyStream)
		return err == nil
	})
	n := a.Notifier("/galley")
	ids := make([]string, 0, count)
	for i := from; i < from+count; i++ {
		body, _ := json.Marshal(notification{N: i})
		id, err := n.Notify(context.Background(), target, "galley", rpcs[i%len(rpcs)], body)
		if err != nil {
			tb.Fatalf("notify %d: %v", i, err)
		}
		ids = append(ids, id)
	}
	return ids
}

// backlog publishes count notifications from A to B while B's ingress is
// down, then starts it again: A has a backlog for B.
func backlog(tb testing.TB, w *world, count int) []string {
	tb.Helper()
	if err := w.b.StopIngress(withTimeout(tb, 10*time.Second)); err != nil {
		tb.Fatal(err)
	}
	ids := publish(tb, w.a, domainB, 0, count)
	if err := w.b.StartIngress(); err != nil {
		tb.Fatal(err)
	}
	return ids
}

// checkExactlyOnceInOrder checks that got holds the notifications of ids,
// each once, in that order, from origin.
func checkExactlyOnceInOrder(tb testing.TB, r *received, ids []string, origin string) {
	tb.Helper()
	got := r.snapshot()
	if len(got) != len(ids) {
		tb.Fatalf("%d notifications handled, want %d", len(got), len(ids))
	}
	for i, n := range got {
		if n.ID != ids[i] {
			tb.Fatalf("notification %d is %s, want %s (order or exactly-once broken)", i, n.ID, ids[i])
		}
		if n.Origin != origin {
			tb.Fatalf("notification %d from %s, want %s", i, n.Origin, origin)
		}
	}
}

func TestNotificationRoundTrip(t *testing.T) {
	w := newNotifyWorld(t, 1, nil, nil)
	r := serveNotifications(t, w.b, "galley")
	ids := publish(t, w.a, domainB, 0, 100)
	waitFor(t, 20*time.Second, "100 notifications", func() bool { return r.len() >= len(ids) })
	checkExactlyOnceInOrder(t, r, ids, domainA)
	got := r.snapshot()
	var body notification
	if err := json.Unmarshal(got[42].Body, &body); err != nil || body.N != 42 {
		t.Fatalf("body of notification 42: %s (%v)", got[42].Body, err)
	}
}

// TestNotificationsOneAtATime: notifications published one at a time, each
// once the previous one arrived, are each delivered by the wake-up of
// their own publish (the stream's periodic scan, the safety net, runs only
// every 30 s here). A notification stored a moment before its
// destination's consumer learns of it must not be taken for an empty
// backlog.
func TestNotificationsOneAtATime(t *testing.T) {
	w := newWorldWith(t, fedtest.BackendOptions{Env: map[string]string{"FED_NOTIFY_SCAN_INTERVAL": "30s"}}, fedtest.BackendOptions{})
	r := serveNotifications(t, w.b, "galley")
	var ids []string
	for i := range 200 {
		ids = append(ids, publish(t, w.a, domainB, i, 1)...)
		waitFor(t, 5*time.Second, fmt.Sprintf("notification %d without waiting for the scan", i), func() bool { return r.len() > i })
	}
	checkExactlyOnceInOrder(t, r, ids, domainA)
}
