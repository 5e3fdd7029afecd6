package e2e

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/notify"
	"github.com/fedbus/fedbus/policy"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// deadLetters returns the dead letters of be (to domain when not empty).
func deadLetters(tb testing.TB, be *fedtest.Backend, domain string) []notify.DeadLetter {
	tb.Helper()
	ctx := withTimeout(tb, 10*time.Second)
	dead, err := be.JetStream.Stream(ctx, contract.DefaultDeadStream)
	if err != nil {
		tb.Fatal(err)
	}
	list, err := notify.ListDead(ctx, dead, be.Subjects, domain, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return list
}

// TestPoisonNotification: B refuses one notification for good (its rules
// do not let A call that rpc: 400 federation-denied). It becomes a dead
// letter on A with the reason; the notifications after it arrive, in
// order; replayed once B allows it, it arrives too. In batches and one by
// one.
func TestPoisonNotification(t *testing.T) {
	for _, batch := range []string{"100", "1"} {
		t.Run("batch "+batch, func(t *testing.T) {
			w := newWorldWith(t, fedtest.BackendOptions{Env: notifyEnv(map[string]string{"FED_NOTIFY_BATCH": batch})},
				fedtest.BackendOptions{Env: notifyEnv(nil), KVBucket: "fedbus"})
			rules, err := policy.OpenStore(withTimeout(t, 5*time.Second), w.b.JetStream, "fedbus", 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := rules.SetDefaults(context.Background(), policy.Rules{"galley": {"on-member-join"}}); err != nil {
				t.Fatal(err)
			}
			r := serveNotifications(t, w.b, "galley")
			ids := publish(t, w.a, domainB, 0, 20, "on-member-join")
			poison := publish(t, w.a, domainB, 20, 1, "on-poison")[0]
			ids = append(ids, publish(t, w.a, domainB, 21, 20, "on-member-join")...)
			waitFor(t, 20*time.Second, "40 notifications", func() bool { return r.len() >= len(ids) })
			checkExactlyOnceInOrder(t, r, ids, domainA)
			var dl []notify.DeadLetter
			waitFor(t, 5*time.Second, "the dead letter", func() bool { dl = deadLetters(t, w.a, domainB); return len(dl) == 1 })
			d := dl[0]
			if d.ID != poison || d.Status != contract.StatusOf(contract.LabelRemoteError) || d.Label != contract.LabelRemoteError ||
				d.Error == nil || d.Error.Inner == nil || d.Error.Inner.Label != contract.LabelFederationDenied || d.Error.Inner.Code != http.StatusBadRequest {
				t.Fatalf("dead letter: %+v (error %+v)", d, d.Error)
			}
			if subject, _ := w.a.Subjects.Notify("galley", "on-poison", domainB); d.Subject != subject {
				t.Fatalf("dead letter subject %s, want %s", d.Subject, subject)
			}
			// The operator allows it and replays it (fedctl notifications
			// dead replay).
			if err := rules.SetDefaults(context.Background(), policy.Rules{"galley": {"*"}}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "the new rules at B", func() bool {
				_, err := w.a.Client("/galley").Call(context.Background(), domainB, "galley", "on-poison", []byte(`{}`))
				var fe *contract.Error
				return errors.As(err, &fe) && fe.Inner != nil && fe.Inner.Label != contract.LabelFederationDenied
			})
			dead, err := w.a.JetStream.Stream(withTimeout(t, 5*time.Second), contract.DefaultDeadStream)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := notify.Replay(withTimeout(t, 5*time.Second), w.a.JetStream, dead, w.a.Subjects, d.Seq); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 20*time.Second, "the replayed notification", func() bool { return r.len() >= len(ids)+1 })
			if got := r.snapshot()[len(ids)]; got.ID != poison || got.RPC != "on-poison" {
				t.Fatalf("replayed: %+v", got)
			}
			if n := len(deadLetters(t, w.a, domainB)); n != 0 {
				t.Fatalf("%d dead letters left after the replay", n)
			}
		})
	}
}

// TestNotificationDeduplication: the same notification published twice
// with one ce-id (a component retrying after a timeout) is delivered once.
func TestNotificationDeduplication(t *testing.T) {
	w := newNotifyWorld(t, 1, nil, nil)
	r := serveNotifications(t, w.b, "galley")
	n := w.a.Notifier("/galley")
	ctx := withTimeout(t, 10*time.Second)
	id, err := n.Notify(ctx, domainB, "galley", "on-member-join", []byte(`{"n":1}`), bus.WithID("member-join-42"))
	if err != nil || id != "member-join-42" {
		t.Fatalf("notify: %q, %v", id, err)
	}
	if _, err := n.Notify(ctx, domainB, "galley", "on-member-join", []byte(`{"n":1}`), bus.WithID("member-join-42")); err != nil {
		t.Fatal(err)
	}
	after := publish(t, w.a, domainB, 2, 1)
	waitFor(t, 10*time.Second, "the notification after", func() bool { return r.len() >= 2 })
	checkExactlyOnceInOrder(t, r, []string{"member-join-42", after[0]}, domainA)
}

// TestFourWorkersOneDeliveryStream: four federator workers meet a new
// destination at the same moment (each is woken by the notifications to
// it); still one request at a time reaches B, and B's component has every
// notification once, in order.
func TestFourWorkersOneDeliveryStream(t *testing.T) {
	var inFlight, most atomic.Int32
	track := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !isNotification(r) {
				next.ServeHTTP(w, r)
				return
			}
			n := inFlight.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(2 * time.Millisecond) // widen the window for a second request
			next.ServeHTTP(w, r)
			inFlight.Add(-1)
		})
	}
	w := newWorldWith(t, fedtest.BackendOptions{Federators: 4, Env: notifyEnv(map[string]string{"FED_NOTIFY_BATCH": "10"})},
		fedtest.BackendOptions{Env: notifyEnv(nil), WrapIngress: track})
	r := serveNotifications(t, w.b, "galley")
	// Published as fast as possible: the wake-up messages go to every
	// worker in turn, while another delivers.
	ids := publish(t, w.a, domainB, 0, 500)
	waitFor(t, 30*time.Second, "500 notifications", func() bool { return r.len() >= len(ids) })
	checkExactlyOnceInOrder(t, r, ids, domainA)
	if m := most.Load(); m != 1 {
		t.Fatalf("%d notification requests to B were in flight at once, want 1", m)
	}
}

// TestNotificationsToARemoteWithoutBatches: a remote that does not
// announce batches (here fedbus with FED_INGRESS_BATCH_MAX=0, as wire-server
// would) gets one notification per request, at /federation/<component>/<rpc>.
func TestNotificationsToARemoteWithoutBatches(t *testing.T) {
	var single, batches atomic.Int32
	count := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.URL.Path == contract.BatchPath:
				batches.Add(1)
			case r.Header.Get(contract.HTTPNotificationID) != "":
				single.Add(1)
			}
			next.ServeHTTP(w, r)
		})
	}
	w := newWorldWith(t, fedtest.BackendOptions{Env: notifyEnv(nil)},
		fedtest.BackendOptions{Env: notifyEnv(map[string]string{"FED_INGRESS_BATCH_MAX": "0"}), WrapIngress: count})
	r := serveNotifications(t, w.b, "galley")
	ids := backlog(t, w, 50)
	waitFor(t, 20*time.Second, "50 notifications", func() bool { return r.len() >= len(ids) })
	checkExactlyOnceInOrder(t, r, ids, domainA)
	if single.Load() < 50 || batches.Load() != 0 {
		t.Fatalf("%d single requests and %d batches, want 50 and 0", single.Load(), batches.Load())
	}
}

// TestContactRetriesAtOnce: a destination that failed waits for its next
// attempt (here an hour away); a request of that remote to us makes it
// retry at once.
func TestContactRetriesAtOnce(t *testing.T) {
	slow := map[string]string{"FED_NOTIFY_RETRY_MIN": "1h", "FED_NOTIFY_RETRY_MAX": "1h"}
	w := newNotifyWorld(t, 2, slow, nil)
	serve(t, w.a, "brig", component)
	r := serveNotifications(t, w.b, "galley")
	if err := w.b.StopIngress(withTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	ids := publish(t, w.a, domainB, 0, 10)
	st := destinationState(t, w.a)
	waitFor(t, 10*time.Second, "A to fail", func() bool { return st(domainB).Attempts > 0 })
	if err := w.b.StartIngress(); err != nil {
		t.Fatal(err)
	}
	if next := st(domainB).NextAttempt; time.Until(next) < 20*time.Minute {
		t.Fatalf("next attempt in %s, want about an hour", time.Until(next))
	}
	// B calls A: A's ingress tells A's federators that B is back.
	if _, err := w.b.Client("/brig").Call(withTimeout(t, 5*time.Second), domainA, "brig", "echo", []byte(`"hi"`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the notifications after B's request", func() bool { return r.len() >= len(ids) })
	checkExactlyOnceInOrder(t, r, ids, domainA)
}

// TestLongOutagePolicy: with FED_NOTIFY_MAX_AGE, notifications older than
// it when B is back become dead letters (notification-expired); with
// FED_NOTIFY_MAX_BACKLOG, the oldest beyond it do (backlog-limit). The
// others arrive, in order.
func TestLongOutagePolicy(t *testing.T) {
	cases := []struct {
		name, env, value, label string
		old, young              int // published before and after the wait
		wantDead                int
	}{
		{"max age", "FED_NOTIFY_MAX_AGE", "1s", contract.LabelNotificationExpired, 5, 3, 5},
		{"max backlog", "FED_NOTIFY_MAX_BACKLOG", "4", contract.LabelBacklogLimit, 5, 3, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newNotifyWorld(t, 1, map[string]string{tc.env: tc.value}, nil)
			r := serveNotifications(t, w.b, "galley")
			if err := w.b.StopIngress(withTimeout(t, 10*time.Second)); err != nil {
				t.Fatal(err)
			}
			all := publish(t, w.a, domainB, 0, tc.old)
			time.Sleep(1500 * time.Millisecond) // older than the max age
			all = append(all, publish(t, w.a, domainB, tc.old, tc.young)...)
			if err := w.b.StartIngress(); err != nil {
				t.Fatal(err)
			}
			want := all[tc.wantDead:]
			waitFor(t, 20*time.Second, "the notifications kept", func() bool { return r.len() >= len(want) })
			var dl []notify.DeadLetter
			waitFor(t, 10*time.Second, "the dead letters", func() bool { dl = deadLetters(t, w.a, domainB); return len(dl) >= tc.wantDead })
			checkExactlyOnceInOrder(t, r, want, domainA)
			for i, d := range dl {
				if d.ID != all[i] || d.Label != tc.label {
					t.Fatalf("dead letter %d: %s %s, want %s %s", i, d.ID, d.Label, all[i], tc.label)
				}
			}
		})
	}
}

// TestFullStoreRefusesNewNotifications: a full notification stream
// refuses new notifications with notification-store-full and drops none
// it holds; they are delivered once B is back.
func TestFullStoreRefusesNewNotifications(t *testing.T) {
	w := newNotifyWorld(t, 1, map[string]string{"FED_NOTIFY_MAX_BYTES": "65536"}, nil)
	r := serveNotifications(t, w.b, "galley")
	if err := w.b.StopIngress(withTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	publish(t, w.a, domainB, 0, 0) // waits for A's notification stream
	n := w.a.Notifier("/galley")
	body := make([]byte, 1000)
	for i := range body {
		body[i] = 'x'
	}
	body[0], body[len(body)-1] = '"', '"'
	var ids []string
	var full error
	for range 200 {
		id, err := n.Notify(context.Background(), domainB, "galley", "on-typing", body)
		if err != nil {
			full = err
			break
		}
		ids = append(ids, id)
	}
	if !errors.Is(full, contract.ErrStoreFull) {
		t.Fatalf("after %d notifications: %v, want notification-store-full", len(ids), full)
	}
	t.Logf("stored %d, then: %v", len(ids), full)
	if err := w.b.StartIngress(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the stored notifications", func() bool { return r.len() >= len(ids) })
	checkExactlyOnceInOrder(t, r, ids, domainA)
}

// TestNotificationsRefusedBeforeTheySend: notifications that cannot be sent
// (published around the bus client: an unknown component, a subject whose
// domain is not canonical, not a CloudEvent; or a target the policy
// refuses) become dead letters at once with the contract's label, and the
// valid ones arrive.
func TestNotificationsRefusedBeforeTheySend(t *testing.T) {
	w := newNotifyWorld(t, 1, nil, nil, domainC)
	r := serveNotifications(t, w.b, "galley")
	publish(t, w.a, domainB, 0, 0) // waits for A's notification stream
	ctx := withTimeout(t, 10*time.Second)
	raw := func(subject, id string, ce bool) {
		t.Helper()
		ev := bus.Event{ID: id, Source: "/raw", Type: contract.TypeNotification, Data: []byte(`{}`)}
		msg := ev.Message(subject)
		if !ce {
			msg = &nats.Msg{Subject: subject, Header: nats.Header{}, Data: []byte(`{}`)}
		}
		msg.Header.Set(contract.HeaderMsgID, id)
		if _, err := w.a.JetStream.PublishMsg(ctx, msg); err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
	}
	raw("fed.notify.chat.on-x.b.example.com", "unknown-component", true)
	raw("fed.notify.galley.on-x.B.example.com", "upper-case-domain", true)
	raw("fed.notify.galley.on-x.b.example.com", "not-a-cloudevent", false)
	raw("fed.notify.galley.on-x.d.example.com", "not-allowed", true)
	ids := publish(t, w.a, domainB, 0, 3)
	waitFor(t, 10*time.Second, "the valid notifications", func() bool { return r.len() >= len(ids) })
	checkExactlyOnceInOrder(t, r, ids, domainA)
	want := map[string]string{
		"unknown-component": contract.LabelUnknownComponent,
		"upper-case-domain": contract.LabelDomainParseError,
		"not-a-cloudevent":  contract.LabelInvalidRequest,
		"not-allowed":       contract.LabelFederationDenied,
	}
	got := map[string]string{}
	waitFor(t, 10*time.Second, "four dead letters", func() bool {
		for _, d := range deadLetters(t, w.a, "") {
			id := d.Header.Get(contract.HeaderID)
			if id == "" {
				id = "not-a-cloudevent"
			}
			got[id] = d.Label
		}
		return len(got) == len(want)
	})
	for id, label := range want {
		if got[id] != label {
			t.Errorf("%s: dead letter label %q, want %q", id, got[id], label)
		}
	}
}

// TestDestinationsSharingABackend: two destination domains served by the
// same backend (B's ingress) drain at once, their batches interleaved at
// B; every notification arrives once, each destination's in order.
func TestDestinationsSharingABackend(t *testing.T) {
	const other = "b2.example.com"
	w := newNotifyWorld(t, 2, map[string]string{"FED_NOTIFY_BATCH": "10"}, nil, other)
	port, err := strconv.Atoi(w.b.IngressAddr[strings.LastIndexByte(w.b.IngressAddr, ':')+1:])
	if err != nil {
		t.Fatal(err)
	}
	w.dns.SetSRV(other, 60, testbed.SRVRecord{Target: infraB, Port: uint16(port), Priority: 10, Weight: 5})
	r := serveNotifications(t, w.b, "galley")
	if err := w.b.StopIngress(withTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{}
	for i := range 400 {
		target := []string{domainB, other}[i%2]
		want[target] = append(want[target], publish(t, w.a, target, i, 1)...)
	}
	if err := w.b.StartIngress(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "400 notifications", func() bool { return r.len() >= 400 })
	time.Sleep(200 * time.Millisecond) // a duplicate would arrive by now
	got := r.snapshot()
	if len(got) != 400 {
		t.Fatalf("%d notifications handled, want 400", len(got))
	}
	index := map[string]int{}
	for _, target := range []string{domainB, other} {
		for i, id := range want[target] {
			index[id] = i
		}
	}
	next := map[string]int{}
	for _, n := range got {
		target := domainB
		if slices.Contains(want[other], n.ID) {
			target = other
		}
		if index[n.ID] != next[target] {
			t.Fatalf("%s: notification %d of %s arrived when %d was due", n.ID, index[n.ID], target, next[target])
		}
		next[target]++
	}
}
