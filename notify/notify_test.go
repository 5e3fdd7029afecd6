package notify

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

var names = Names{Stream: contract.DefaultNotifyStream, Dead: contract.DefaultDeadStream}

// newJS returns the JetStream API of an embedded server with file
// storage, closed with the test.
func newJS(tb testing.TB) jetstream.JetStream {
	tb.Helper()
	ns, err := testbed.StartNATS(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}

func subjects(tb testing.TB) contract.Subjects {
	tb.Helper()
	s, err := contract.NewSubjects(contract.DefaultPrefix)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func ctx(tb testing.TB) context.Context {
	tb.Helper()
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	tb.Cleanup(cancel)
	return c
}

func TestEnsure(t *testing.T) {
	js, sub := newJS(t), subjects(t)
	cfg := OutboundConfig(names.Stream, sub, Limits{MaxBytes: 1 << 20, Duplicates: time.Minute})
	s, created, err := Ensure(ctx(t), js, cfg)
	if err != nil || !created {
		t.Fatalf("first Ensure: created %v, %v", created, err)
	}
	got := s.CachedInfo().Config
	if got.Retention != jetstream.WorkQueuePolicy || got.Discard != jetstream.DiscardNew || got.MaxBytes != 1<<20 ||
		got.RePublish == nil || got.RePublish.Destination != sub.NotifiedAll() || !got.RePublish.HeadersOnly {
		t.Fatalf("config: %+v", got)
	}
	if _, created, err := Ensure(ctx(t), js, cfg); err != nil || created {
		t.Fatalf("second Ensure: created %v, %v", created, err)
	}
	// A stream of the name with other subjects is not taken over.
	other := cfg
	other.Name = "OTHER"
	other.Subjects = []string{"other.>"}
	other.RePublish = nil
	if _, err := js.CreateStream(ctx(t), other); err != nil {
		t.Fatal(err)
	}
	cfg.Name = "OTHER"
	if _, _, err := Ensure(ctx(t), js, cfg); !errors.Is(err, ErrIncompatible) {
		t.Fatalf("incompatible stream: %v", err)
	}
}

func TestLeases(t *testing.T) {
	js := newJS(t)
	if _, err := OpenStore(ctx(t), js, names, 2*time.Second, 0); err == nil {
		t.Fatal("replicas 0 opened missing buckets")
	}
	store, err := OpenStore(ctx(t), js, names, 2*time.Second, 1)
	if err != nil {
		t.Fatal(err)
	}
	a, err := store.Acquire(ctx(t), "b.example.com", "worker-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.Acquire(ctx(t), "b.example.com", "worker-b"); !errors.Is(err, ErrLeaseHeld) {
		t.Fatalf("second acquire: %v, want ErrLeaseHeld", err)
	}
	if _, err := store.Acquire(ctx(t), "c.example.com", "worker-b"); err != nil {
		t.Fatalf("another domain: %v", err)
	}
	holders, err := store.Holders(ctx(t))
	if err != nil || holders["b.example.com"] != "worker-a" || holders["c.example.com"] != "worker-b" {
		t.Fatalf("holders %v, %v", holders, err)
	}
	if err := a.Refresh(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if r := a.Remaining(time.Now()); r <= time.Second || r > 2*time.Second {
		t.Fatalf("remaining %s", r)
	}
	if err := a.Release(ctx(t)); err != nil {
		t.Fatal(err)
	}
	b, err := store.Acquire(ctx(t), "b.example.com", "worker-b")
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	if err := a.Refresh(ctx(t)); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("refresh of a released lease: %v", err)
	}
	// Not refreshed, the lease expires and another worker takes it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := store.Acquire(ctx(t), "b.example.com", "worker-c")
		if err == nil {
			if err := b.Refresh(ctx(t)); !errors.Is(err, ErrLeaseLost) {
				t.Fatalf("refresh of an expired lease: %v", err)
			}
			_ = c.Release(ctx(t))
			break
		}
		if !errors.Is(err, ErrLeaseHeld) || time.Now().After(deadline) {
			t.Fatalf("acquire after expiry: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestState(t *testing.T) {
	js := newJS(t)
	store, err := OpenStore(ctx(t), js, names, 2*time.Second, 1)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := store.State(ctx(t), "b.example.com"); err != nil || st.Attempts != 0 {
		t.Fatalf("no state: %+v, %v", st, err)
	}
	if ok, err := store.RetryNow(ctx(t), "b.example.com"); ok || err != nil {
		t.Fatalf("retry now without state: %v, %v", ok, err)
	}
	next := time.Now().Add(time.Hour).UTC().Truncate(time.Millisecond)
	if err := store.PutState(ctx(t), "b.example.com", State{Attempts: 3, NextAttempt: next, LastLabel: contract.LabelTimeout}); err != nil {
		t.Fatal(err)
	}
	states, err := store.States(ctx(t))
	if err != nil || len(states) != 1 || states["b.example.com"].Attempts != 3 || !states["b.example.com"].NextAttempt.Equal(next) {
		t.Fatalf("states %+v, %v", states, err)
	}
	if ok, err := store.RetryNow(ctx(t), "b.example.com"); !ok || err != nil {
		t.Fatalf("retry now: %v, %v", ok, err)
	}
	if st, _ := store.State(ctx(t), "b.example.com"); !st.NextAttempt.IsZero() || st.Attempts != 3 {
		t.Fatalf("after retry now: %+v", st)
	}
	if err := store.ClearState(ctx(t), "b.example.com"); err != nil {
		t.Fatal(err)
	}
	if states, _ := store.States(ctx(t)); len(states) != 0 {
		t.Fatalf("states after clear: %v", states)
	}
}

func TestMarks(t *testing.T) {
	for epoch, want := range map[string]bool{"1764590403123456789.b.example.com": true, "e1": true, "": false, "a b": false, "a/b": false, strings.Repeat("e", 301): false} {
		if got := ValidEpoch(epoch); got != want {
			t.Errorf("ValidEpoch(%q) = %v", epoch, got)
		}
	}
	if e := Epoch(time.Unix(1, 5), "b.example.com"); e != "1000000005.b.example.com" || !ValidEpoch(e) {
		t.Errorf("Epoch = %q", e)
	}
	js := newJS(t)
	m, err := OpenMarks(ctx(t), js, contract.DefaultInboxStream, 1)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		origin, epoch string
		to, want      uint64
	}{
		{"a.example.com", "e1", 5, 5},
		{"a.example.com", "e1", 3, 5}, // never lowered
		{"a.example.com", "e1", 9, 9},
		{"a.example.com", "e2", 2, 2}, // each epoch (destination) has its own
		{"c.example.com", "e1", 1, 1}, // and each origin
	}
	for _, s := range steps {
		if err := m.Advance(ctx(t), s.origin, s.epoch, s.to); err != nil {
			t.Fatal(err)
		}
		if got, err := m.Get(ctx(t), s.origin, s.epoch); err != nil || got != s.want {
			t.Fatalf("%s %s after %d: %d, %v; want %d", s.origin, s.epoch, s.to, got, err, s.want)
		}
	}
	if got, _ := m.Get(ctx(t), "a.example.com", "e1"); got != 9 {
		t.Fatalf("epoch e1 after e2: %d", got)
	}
	if got, _ := m.Get(ctx(t), "a.example.com", "not/valid"); got != 0 {
		t.Fatalf("invalid epoch: %d", got)
	}
}

func TestBacklogDeadLettersAndReplay(t *testing.T) {
	js, sub := newJS(t), subjects(t)
	stream, _, err := Ensure(ctx(t), js, OutboundConfig(names.Stream, sub, Limits{Duplicates: time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	dead, _, err := Ensure(ctx(t), js, DeadConfig(names.Dead, sub, Limits{Duplicates: time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	store, err := OpenStore(ctx(t), js, names, 5*time.Second, 1)
	if err != nil {
		t.Fatal(err)
	}
	pub := func(subject, id string) {
		t.Helper()
		msg := &nats.Msg{Subject: subject, Header: nats.Header{contract.HeaderID: {id}, contract.HeaderMsgID: {id}}, Data: []byte(`{}`)}
		if _, err := js.PublishMsg(ctx(t), msg); err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range []string{"b.example.com", "b.example.com", "c.example.com"} {
		s, _ := sub.Notify("galley", "on-x", d)
		pub(s, "n"+string(rune('0'+i)))
	}
	pub("fed.notify.galley.on-x.B.example.com", "upper")
	counts, invalid, err := Backlog(ctx(t), stream, sub)
	if err != nil {
		t.Fatal(err)
	}
	if counts["b.example.com"] != 2 || counts["c.example.com"] != 1 || len(invalid) != 1 || invalid[0] != "fed.notify.galley.on-x.B.example.com" {
		t.Fatalf("backlog %v, invalid %v", counts, invalid)
	}
	list, _, err := List(ctx(t), stream, store, sub)
	if err != nil || len(list) != 2 || list[0].Domain != "b.example.com" || list[0].Backlog != 2 || list[0].Oldest.IsZero() {
		t.Fatalf("list %+v, %v", list, err)
	}
	// Set the first notification to B aside, then replay it.
	first, err := Oldest(ctx(t), stream, sub, "b.example.com")
	if err != nil {
		t.Fatal(err)
	}
	e := contract.RemoteError(contract.Errorf(contract.LabelFederationDenied, "not allowed"))
	msg := DeadMessage(sub, first.Subject, first.Header, first.Data, first.Sequence, e, 2, first.Time, time.Now())
	if want, _ := sub.Dead("galley", "on-x", "b.example.com"); msg.Subject != want || msg.Header.Get(contract.HeaderMsgID) == first.Header.Get(contract.HeaderMsgID) {
		t.Fatalf("dead letter %s %v", msg.Subject, msg.Header)
	}
	for range 2 { // set aside twice (a worker died in between): stored once
		if _, err := js.PublishMsg(ctx(t), msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.DeleteMsg(ctx(t), first.Sequence); err != nil {
		t.Fatal(err)
	}
	dls, err := ListDead(ctx(t), dead, sub, "b.example.com", 0)
	if err != nil || len(dls) != 1 {
		t.Fatalf("dead letters %+v, %v", dls, err)
	}
	dl := dls[0]
	if dl.ID != "n0" || dl.Label != contract.LabelRemoteError || dl.Status != 533 || dl.Attempts != 2 || dl.Error == nil ||
		dl.Error.Inner.Label != contract.LabelFederationDenied || dl.Subject != first.Subject || dl.Published.IsZero() {
		t.Fatalf("dead letter %+v", dl)
	}
	if other, _ := ListDead(ctx(t), dead, sub, "c.example.com", 0); len(other) != 0 {
		t.Fatalf("dead letters of c: %v", other)
	}
	if _, err := Replay(ctx(t), js, dead, sub, dl.Seq); err != nil {
		t.Fatal(err)
	}
	if counts, _, _ := Backlog(ctx(t), stream, sub); counts["b.example.com"] != 2 {
		t.Fatalf("backlog after replay %v", counts)
	}
	if dls, _ := ListDead(ctx(t), dead, sub, "", 0); len(dls) != 0 {
		t.Fatalf("dead letters after replay: %v", dls)
	}
	// A dead letter of an invalid subject cannot be replayed.
	bad := DeadMessage(sub, "fed.notify.galley.on-x.B.example.com", nil, nil, 99, e, 0, time.Time{}, time.Now())
	if bad.Subject != sub.DeadInvalid() {
		t.Fatalf("dead subject %s", bad.Subject)
	}
	ack, err := js.PublishMsg(ctx(t), bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Replay(ctx(t), js, dead, sub, ack.Sequence); !errors.Is(err, ErrNotReplayable) {
		t.Fatalf("replay of an invalid subject: %v", err)
	}
	n, err := Purge(ctx(t), stream, store, sub, "b.example.com")
	if err != nil || n != 2 {
		t.Fatalf("purge: %d, %v", n, err)
	}
	if counts, _, _ := Backlog(ctx(t), stream, sub); counts["b.example.com"] != 0 || counts["c.example.com"] != 1 {
		t.Fatalf("backlog after purge %v", counts)
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{"FEDBUS_NOTIFY": true, "a-b_c": true, "": false, "a.b": false, "a b": false, strings.Repeat("a", 129): false} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v", name, got)
		}
	}
}
