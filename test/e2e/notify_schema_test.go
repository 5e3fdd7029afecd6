package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/schemas"
	"github.com/fedbus/fedbus/test/fedtest"
)

// TestNotificationMessagesMatchTheSchemas validates the real messages of
// the notification path against the AsyncAPI document: what a component
// publishes (fed.notify), what B's ingress stores (fed.inbox), and the dead
// letter of a notification B refuses (fed.dead).
func TestNotificationMessagesMatchTheSchemas(t *testing.T) {
	w := newWorldWith(t, fedtest.BackendOptions{Env: notifyEnv(nil)}, fedtest.BackendOptions{Env: notifyEnv(nil), KVBucket: "fedbus"})
	rules, err := policy.OpenStore(withTimeout(t, 5*time.Second), w.b.JetStream, "fedbus", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := rules.SetDefaults(context.Background(), policy.Rules{"galley": {"on-member-join"}}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	captured := map[string][]*nats.Msg{}
	capture := func(nc *nats.Conn, subject, kind string) {
		sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
			mu.Lock()
			captured[kind] = append(captured[kind], m)
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	capture(w.a.NATS, w.a.Subjects.NotifyAll(), "notify")
	capture(w.b.NATS, w.b.Subjects.InboxAll(), "inbox")
	capture(w.a.NATS, w.a.Subjects.DeadAll(), "dead")
	r := serveNotifications(t, w.b, "galley")
	publish(t, w.a, domainB, 0, 3, "on-member-join")
	publish(t, w.a, domainB, 3, 1, "on-poison")
	waitFor(t, 20*time.Second, "the notifications and the dead letter", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return r.len() >= 3 && len(captured["dead"]) >= 1
	})
	mu.Lock()
	defer mu.Unlock()
	for kind, schema := range map[string]string{"notify": "NotificationHeaders", "inbox": "InboundNotificationHeaders", "dead": "DeadLetterHeaders"} {
		msgs := captured[kind]
		if len(msgs) == 0 {
			t.Fatalf("no %s message", kind)
		}
		for _, m := range msgs {
			if err := schemas.ValidateHeaders(schema, m.Header); err != nil {
				t.Errorf("%s message on %s vs %s: %v (headers %v)", kind, m.Subject, schema, err, m.Header)
			}
		}
	}
	if dl := captured["dead"][0]; dl.Header.Get(contract.HeaderDeadLabel) != contract.LabelRemoteError {
		t.Errorf("dead letter label %q", dl.Header.Get(contract.HeaderDeadLabel))
	}
}
