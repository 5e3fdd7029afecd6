package natsperm_test

import (
	"bytes"
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/ctl"
	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/federator"
	"github.com/fedbus/fedbus/notify"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/test/testbed"
)

// jsOf is the JetStream API of a client.
func jsOf(t testing.TB, c *client) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(c.Conn)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// TestNotificationPermissions runs the notification path (contract section
// 6) as the users of fedbus.conf, with the real federator and components:
// every role can do its part without a permission violation, and brig can
// neither consume galley's notifications nor pose as the ingress.
func TestNotificationPermissions(t *testing.T) {
	s := startServer(t)
	fed := connect(t, s, "federator")
	ing := connect(t, s, "ingress")
	galley := connect(t, s, "galley")
	brig := connect(t, s, "brig")
	subjects, err := contract.NewSubjects("fed")
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t)

	// The federator of a.example.com: its destinations have no SRV
	// record, so their notifications fail and wait.
	ca, err := testbed.NewCA("natsperm CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(testbed.LeafOptions{}, "fed.a-infra.example.net")
	if err != nil {
		t.Fatal(err)
	}
	dns := testbed.StartDNS(t)
	res, err := discovery.New(discovery.Config{Servers: []string{dns.Addr()}, AllowPrivate: true, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = res.Close() })
	pol, err := policy.New(contract.AllowAll, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := federator.NewConfig()
	cfg.Domain, cfg.Strategy = "a.example.com", contract.AllowAll
	cfg.Notify.RetryMin, cfg.Notify.RetryMax, cfg.Notify.ScanInterval = time.Hour, time.Hour, time.Second
	f, err := federator.New(cfg, federator.Deps{NATS: fed.Conn, JetStream: jsOf(t, fed), Resolver: res, Policy: pol, Certs: ca.CertStore(t, leaf), Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithCancel(context.Background())
	if err := f.Start(fctx); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), waitFor)
		defer scancel()
		_ = f.Shutdown(sctx)
		cancel()
	})
	fjs := jsOf(t, fed)
	deadline := time.Now().Add(waitFor)
	for {
		if _, err := fjs.Stream(ctx, contract.DefaultNotifyStream); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the federator did not create its streams")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// galley notifies: one waits (no SRV record), one is refused before it
	// is sent (component not federated) and becomes a dead letter.
	notifier := bus.NewNotifier(jsOf(t, galley), subjects, "/galley")
	if _, err := notifier.Notify(ctx, "nowhere.example.com", "galley", "on-member-join", []byte(`{}`)); err != nil {
		t.Fatalf("galley notifies: %v", err)
	}
	if _, err := notifier.Notify(ctx, "b.example.com", "chat", "on-x", []byte(`{}`)); err != nil {
		t.Fatalf("galley notifies: %v", err)
	}

	// fedctl sees both, retries, replays and purges.
	try := func(args string) (string, error) {
		c := ctl.NewConfig()
		c.NATSURL = s.ClientURL()
		c.NATS.User, c.NATS.Password, c.NATS.InboxPrefix = "fedctl", passwords["fedctl"], "_INBOX_fedctl"
		var out bytes.Buffer
		err := ctl.Run(ctx, c, strings.Fields(args), &out, &out)
		return out.String(), err
	}
	fedctl := func(args string) string {
		t.Helper()
		out, err := try(args)
		if err != nil {
			t.Fatalf("fedctl %s: %v (%s)", args, err, out)
		}
		return out
	}
	var last string
	waitUntil(t, "the waiting destination and the dead letter", func() bool {
		out, err := try("notifications list")
		last = out
		if err != nil {
			last += err.Error()
		}
		return err == nil && strings.Contains(out, "nowhere.example.com  1") && strings.Contains(out, "1 dead letter(s)")
	}, &last)
	if out := fedctl("notifications dead list"); !strings.Contains(out, "unknown-component") {
		t.Fatalf("dead list: %s", out)
	}
	if out := fedctl("notifications retry nowhere.example.com"); !strings.Contains(out, "next attempt now") {
		t.Fatalf("retry: %s", out)
	}
	if out := fedctl("notifications dead replay -all"); !strings.Contains(out, "1 dead letter(s) replayed") {
		t.Fatalf("replay: %s", out)
	}
	if out := fedctl("notifications purge nowhere.example.com"); !strings.Contains(out, "purged 1") {
		t.Fatalf("purge: %s", out)
	}
	flush(t, fed)
	fed.noErrors(t)

	// The ingress stores a notification of b.example.com for galley, as
	// it does after its checks, and tells the federators of the contact.
	ijs := jsOf(t, ing)
	if _, _, err := notify.Ensure(ctx, ijs, notify.InboxConfig(contract.DefaultInboxStream, subjects, notify.Limits{Duplicates: time.Minute})); err != nil {
		t.Fatalf("ingress creates the inbox: %v", err)
	}
	marks, err := notify.OpenMarks(ctx, ijs, contract.DefaultInboxStream, 1)
	if err != nil {
		t.Fatalf("ingress opens the marks: %v", err)
	}
	epoch := notify.Epoch(time.Now(), "a.example.com")
	if _, err := marks.Get(ctx, "b.example.com", epoch); err != nil {
		t.Fatal(err)
	}
	inboxSubject, _ := subjects.Inbox("galley", "on-member-join", "b.example.com")
	ev := bus.Event{ID: "n1", Source: contract.OriginSource("b.example.com", "galley"), Type: contract.TypeNotification, OriginDomain: "b.example.com", Data: []byte(`{}`)}
	msg := ev.Message(inboxSubject)
	msg.Header.Set(contract.HeaderMsgID, "b.example.com/n1")
	if _, err := ijs.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("ingress stores: %v", err)
	}
	if err := marks.Advance(ctx, "b.example.com", epoch, 7); err != nil {
		t.Fatal(err)
	}
	contact, _ := subjects.Contact("b.example.com")
	if err := ing.Publish(contact, nil); err != nil {
		t.Fatal(err)
	}
	flush(t, ing)
	ing.noErrors(t)

	// brig cannot consume galley's notifications, nor store one as if it
	// were the ingress.
	if _, err := bus.ServeNotifications(context.Background(), jsOf(t, brig), subjects, "galley", func(context.Context, *bus.Notification) error { return nil },
		bus.NotificationOptions{Logger: discard}); err != nil {
		t.Fatal(err)
	}
	brig.wantViolationPrefix(t, "Publish", "$JS.API.CONSUMER.CREATE.FEDBUS_INBOX.galley")
	if err := brig.PublishMsg(&nats.Msg{Subject: inboxSubject, Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	brig.wantViolation(t, "Publish", inboxSubject)

	// galley consumes its notification.
	var handled atomic.Int32
	srv, err := bus.ServeNotifications(context.Background(), jsOf(t, galley), subjects, "galley", func(_ context.Context, n *bus.Notification) error {
		if n.Origin == "b.example.com" && n.ID == "n1" {
			handled.Add(1)
		}
		return nil
	}, bus.NotificationOptions{Logger: discard, AckWait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "galley to handle its notification", func() bool { return handled.Load() == 1 }, nil)
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	flush(t, galley)
	galley.noErrors(t)
}

// waitUntil polls cond until it holds or twice waitFor passes; last, when
// not nil, says what was seen.
func waitUntil(t testing.TB, what string, cond func() bool, last *string) {
	t.Helper()
	deadline := time.Now().Add(2 * waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			seen := ""
			if last != nil {
				seen = ": " + *last
			}
			t.Fatalf("timed out waiting for %s%s", what, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
