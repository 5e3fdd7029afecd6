package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/notify"
	"github.com/fedbus/fedbus/test/testbed"
)

// newJetStream starts an in-process NATS server with JetStream on file
// storage (startJetStream) and returns the JetStream API of a connection
// to it.
func newJetStream(tb testing.TB) (jetstream.JetStream, *nats.Conn) {
	tb.Helper()
	nc := startJetStream(tb)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js, nc
}

// ensure creates a notification stream for the test.
func ensure(tb testing.TB, js jetstream.JetStream, cfg jetstream.StreamConfig) jetstream.Stream {
	tb.Helper()
	s, _, err := notify.Ensure(testCtx(tb, 5*time.Second), js, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestNotify(t *testing.T) {
	js, _ := newJetStream(t)
	sub := newSubjects(t, "fed")
	n := bus.NewNotifier(js, sub, "/galley")
	ctx := testCtx(t, 10*time.Second)
	if _, err := n.Notify(ctx, "b.example.com", "galley", "on-x", []byte(`{}`)); !errors.Is(err, contract.ErrComponentUnavailable) {
		t.Fatalf("without a stream: %v, want component-unavailable", err)
	}
	stream := ensure(t, js, notify.OutboundConfig("N", sub, notify.Limits{MaxBytes: 8 << 10, Duplicates: time.Minute}))
	refused := []struct {
		name, target, component, rpc, id string
		want                             *contract.Error
	}{
		{"wildcard domain", "*.example.com", "galley", "on-x", "", contract.ErrDomainParseError},
		{"bad component", "b.example.com", "Galley", "on-x", "", contract.ErrInvalidEndpoint},
		{"bad rpc", "b.example.com", "galley", "on x", "", contract.ErrInvalidEndpoint},
		{"id with a space", "b.example.com", "galley", "on-x", "a b", contract.ErrInvalidRequest},
		{"id too long", "b.example.com", "galley", "on-x", strings.Repeat("i", 129), contract.ErrInvalidRequest},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			var opts []bus.CallOption
			if tc.id != "" {
				opts = append(opts, bus.WithID(tc.id))
			}
			_, err := n.Notify(ctx, tc.target, tc.component, tc.rpc, []byte(`{}`), opts...)
			wantBusError(t, err, tc.want)
		})
	}
	if info, _ := stream.Info(ctx); info.State.Msgs != 0 {
		t.Fatalf("%d messages stored by refused notifications", info.State.Msgs)
	}
	id, err := n.Notify(ctx, "B.Example.COM", "galley", "on-x", []byte(`{"a":1}`), bus.WithTraceParent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Notify(ctx, "b.example.com", "galley", "on-x", []byte(`{"a":1}`), bus.WithID(id)); err != nil {
		t.Fatalf("the same id again: %v", err)
	}
	m, err := stream.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	h := m.Header
	if m.Subject != "fed.notify.galley.on-x.b.example.com" || h.Get(contract.HeaderType) != contract.TypeNotification ||
		h.Get(contract.HeaderID) != id || h.Get(contract.HeaderMsgID) != id || h.Get(contract.HeaderSource) != "/galley" ||
		h.Get(contract.HeaderTraceParent) == "" || h.Get(contract.HeaderTimeoutMs) != "" || string(m.Data) != `{"a":1}` {
		t.Fatalf("stored %s %v %s", m.Subject, h, m.Data)
	}
	if info, _ := stream.Info(ctx); info.State.Msgs != 1 {
		t.Fatalf("%d messages after publishing one id twice", info.State.Msgs)
	}
	// Until the stream is full; what it holds stays.
	var full error
	for i := range 100 {
		if _, err := n.Notify(ctx, "b.example.com", "galley", "on-x", []byte(fmt.Sprintf(`"%0500d"`, i))); err != nil {
			full = err
			break
		}
	}
	wantBusError(t, full, contract.ErrStoreFull)
	if first, err := stream.GetMsg(ctx, 1); err != nil || first.Header.Get(contract.HeaderID) != id {
		t.Fatalf("the first notification after the store filled up: %v", err)
	}
}

// inbox publishes inbound notifications on the inbox stream as the ingress
// does.
type inbox struct {
	tb  testing.TB
	js  jetstream.JetStream
	sub contract.Subjects
}

func newInbox(tb testing.TB) (*inbox, jetstream.Stream) {
	js, _ := newJetStream(tb)
	sub := newSubjects(tb, "fed")
	s := ensure(tb, js, notify.InboxConfig(contract.DefaultInboxStream, sub, notify.Limits{Duplicates: time.Minute}))
	return &inbox{tb: tb, js: js, sub: sub}, s
}

func (in *inbox) put(origin, rpc, id string) {
	in.tb.Helper()
	subject, err := in.sub.Inbox("galley", rpc, origin)
	if err != nil {
		in.tb.Fatal(err)
	}
	ev := bus.Event{ID: id, Source: contract.OriginSource(origin, "galley"), Type: contract.TypeNotification, OriginDomain: origin, Data: []byte(`"` + id + `"`)}
	msg := ev.Message(subject)
	msg.Header.Set(contract.HeaderMsgID, origin+"/"+id)
	if _, err := in.js.PublishMsg(testCtx(in.tb, 5*time.Second), msg); err != nil {
		in.tb.Fatal(err)
	}
}

// handled records what a handler saw, per origin.
type handled struct {
	mu       sync.Mutex
	byOrigin map[string][]string
	all      []string
}

func (h *handled) add(n *bus.Notification) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byOrigin == nil {
		h.byOrigin = map[string][]string{}
	}
	h.byOrigin[n.Origin] = append(h.byOrigin[n.Origin], n.ID)
	h.all = append(h.all, n.ID)
}

func (h *handled) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.all)
}

func (h *handled) of(origin string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.byOrigin[origin]...)
}

func serveInbox(tb testing.TB, in *inbox, h bus.NotificationHandler, ackWait time.Duration) *bus.NotificationServer {
	tb.Helper()
	srv, err := bus.ServeNotifications(context.Background(), in.js, in.sub, "galley", h,
		bus.NotificationOptions{Logger: discardLogger(), AckWait: ackWait, RetryMax: 100 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = srv.Shutdown(testCtx(tb, 5*time.Second)) })
	return srv
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	return out
}

// TestServeNotificationsOrderPerOrigin: a failing notification of one
// origin holds back the later ones of that origin only, and is retried
// until it succeeds; a Permanent error drops it; each is handled once.
func TestServeNotificationsOrderPerOrigin(t *testing.T) {
	in, stream := newInbox(t)
	a, b := ids("a", 30), ids("b", 30)
	for i := range a {
		in.put("a.example.com", "on-x", a[i])
		in.put("b.example.com", "on-x", b[i])
	}
	in.put("b.example.com", "on-x", "b-drop")
	var failures atomic.Int32
	h := &handled{}
	serveInbox(t, in, func(_ context.Context, n *bus.Notification) error {
		switch {
		case n.ID == "a-010" && failures.Add(1) <= 3:
			return errors.New("not yet")
		case n.ID == "b-drop":
			return bus.Permanent(errors.New("never"))
		}
		if n.Component != "galley" || n.RPC != "on-x" || string(n.Body) != `"`+n.ID+`"` || n.Stored.IsZero() {
			t.Errorf("notification %+v", n)
		}
		h.add(n)
		return nil
	}, 2*time.Second)
	waitFor(t, 10*time.Second, "60 notifications", func() bool { return h.count() >= 60 })
	for origin, want := range map[string][]string{"a.example.com": a, "b.example.com": b} {
		if got := h.of(origin); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: %v", origin, got)
		}
	}
	if failures.Load() < 4 {
		t.Fatalf("a-010 failed %d times", failures.Load())
	}
	waitFor(t, 5*time.Second, "the inbox to empty", func() bool {
		info, err := stream.Info(context.Background())
		return err == nil && info.State.Msgs == 0
	})
}

// TestServeNotificationsInstances: two instances of the component; one
// takes the notifications (pinned); when it stops, the other continues,
// in order, each notification once.
func TestServeNotificationsInstances(t *testing.T) {
	in, _ := newInbox(t)
	want := ids("n", 40)
	for _, id := range want[:20] {
		in.put("a.example.com", "on-x", id)
	}
	h := &handled{}
	var who sync.Map // id → instance
	handler := func(name string) bus.NotificationHandler {
		return func(_ context.Context, n *bus.Notification) error {
			who.Store(n.ID, name)
			h.add(n)
			return nil
		}
	}
	first := serveInbox(t, in, handler("first"), time.Second)
	waitFor(t, 10*time.Second, "the first 20", func() bool { return h.count() >= 20 })
	serveInbox(t, in, handler("second"), time.Second)
	if err := first.Shutdown(testCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, id := range want[20:] {
		in.put("a.example.com", "on-x", id)
	}
	waitFor(t, 20*time.Second, "the next 20", func() bool { return h.count() >= 40 })
	if got := h.of("a.example.com"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("handled %v", got)
	}
	for i, id := range want {
		name, _ := who.Load(id)
		if wantName := map[bool]string{true: "first", false: "second"}[i < 20]; name != wantName {
			t.Fatalf("%s handled by %v, want %s", id, name, wantName)
		}
	}
}

func TestServeNotificationsRefusesBadInput(t *testing.T) {
	js, _ := newJetStream(t)
	sub := newSubjects(t, "fed")
	h := func(context.Context, *bus.Notification) error { return nil }
	if _, err := bus.ServeNotifications(context.Background(), js, sub, "Galley", h, bus.NotificationOptions{Logger: discardLogger()}); !errors.Is(err, contract.ErrInvalidEndpoint) {
		t.Fatalf("bad component: %v", err)
	}
	if _, err := bus.ServeNotifications(context.Background(), js, sub, "galley", h, bus.NotificationOptions{}); !errors.Is(err, bus.ErrNoLogger) {
		t.Fatalf("no logger: %v", err)
	}
}

// TestServeNotificationsInstanceDies: the instance handling the
// notifications dies (its connection is cut, nothing acknowledged) while
// a handler runs; the other instance takes over once the pin expires, and
// handles the held notifications first, in order.
func TestServeNotificationsInstanceDies(t *testing.T) {
	s, err := testbed.StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	sub := newSubjects(t, "fed")
	jsOf := func() (jetstream.JetStream, *nats.Conn) {
		nc, err := nats.Connect(s.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js, nc
	}
	js, _ := jsOf()
	ensure(t, js, notify.InboxConfig(contract.DefaultInboxStream, sub, notify.Limits{Duplicates: time.Minute}))
	in := &inbox{tb: t, js: js, sub: sub}
	want := ids("n", 10)
	for _, id := range want {
		in.put("a.example.com", "on-x", id)
	}
	stuck := make(chan struct{})
	entered := make(chan struct{}, 1)
	t.Cleanup(func() { close(stuck) })
	h := &handled{}
	serve := func(js jetstream.JetStream, handler bus.NotificationHandler) {
		srv, err := bus.ServeNotifications(context.Background(), js, sub, "galley", handler,
			bus.NotificationOptions{Logger: discardLogger(), AckWait: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Shutdown(testCtx(t, time.Second)) })
	}
	jsDying, ncDying := jsOf()
	serve(jsDying, func(_ context.Context, n *bus.Notification) error {
		if n.ID == "n-003" {
			entered <- struct{}{}
			<-stuck // never returns while the instance lives
			return errors.New("dead")
		}
		h.add(n)
		return nil
	})
	<-entered
	jsOther, _ := jsOf()
	serve(jsOther, func(_ context.Context, n *bus.Notification) error { h.add(n); return nil })
	ncDying.Close() // the instance dies
	waitFor(t, 20*time.Second, "the other instance to take over", func() bool { return h.count() >= 10 })
	if got := h.of("a.example.com"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("handled %v", got)
	}
}
