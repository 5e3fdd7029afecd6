package ctl

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/notify"
	"github.com/fedbus/fedbus/test/testbed"
)

// TestNotificationCommands runs fedctl notifications against the streams
// and buckets of a backend (made here as the federator makes them): a
// backlog for b.example.com (failing) and c.example.com, one dead letter.
func TestNotificationCommands(t *testing.T) {
	srv, err := testbed.StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	cfg := NewConfig()
	cfg.NATSURL = srv.ClientURL()
	run := func(args string) (string, error) {
		var out bytes.Buffer
		err := Run(context.Background(), cfg, strings.Fields(args), &out, io.Discard)
		return out.String(), err
	}
	if out, err := run("notifications list"); err != nil || !strings.Contains(out, "does not exist yet") {
		t.Fatalf("before the stream exists: %q, %v", out, err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sub, _ := contract.NewSubjects("fed")
	names := notify.Names{Stream: cfg.NotifyStream, Dead: cfg.DeadStream}
	if _, _, err := notify.Ensure(ctx, js, notify.OutboundConfig(names.Stream, sub, notify.Limits{MaxBytes: 1 << 20, Duplicates: time.Minute})); err != nil {
		t.Fatal(err)
	}
	if _, _, err := notify.Ensure(ctx, js, notify.DeadConfig(names.Dead, sub, notify.Limits{Duplicates: time.Minute})); err != nil {
		t.Fatal(err)
	}
	store, err := notify.OpenStore(ctx, js, names, 10*time.Second, 1)
	if err != nil {
		t.Fatal(err)
	}
	pub := func(subject, id string) *jetstream.PubAck {
		t.Helper()
		ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: nats.Header{contract.HeaderID: {id}, contract.HeaderMsgID: {id}}, Data: []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		return ack
	}
	for i := range 3 {
		s, _ := sub.Notify("galley", "on-x", "b.example.com")
		pub(s, "b"+string(rune('0'+i)))
	}
	s, _ := sub.Notify("galley", "on-x", "c.example.com")
	pub(s, "c0")
	if err := store.PutState(ctx, "b.example.com", notify.State{Attempts: 4, NextAttempt: time.Now().Add(time.Minute), FailingSince: time.Now().Add(-time.Hour),
		LastLabel: contract.LabelConnectionRefused, LastError: "federation-connection-refused (521): no target of b.example.com could be connected to"}); err != nil {
		t.Fatal(err)
	}
	e := contract.RemoteError(contract.Errorf(contract.LabelFederationDenied, "rpc on-poison is not allowed"))
	deadSubject, _ := sub.Notify("galley", "on-poison", "b.example.com")
	dl := notify.DeadMessage(sub, deadSubject, nats.Header{contract.HeaderID: {"poison-1"}}, []byte(`{}`), 99, e, 1, time.Now(), time.Now())
	if _, err := js.PublishMsg(ctx, dl); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		args string
		want []string
		err  error
	}{
		{name: "list", args: "notifications list", want: []string{
			"DESTINATION", "b.example.com  3", "in ", "federation-connection-refused", "c.example.com  1",
			"2 destination(s), 4 notification(s) waiting", "of 1.0 MiB", "1 dead letter(s)"}},
		{name: "dead list", args: "notifications dead list", want: []string{"poison-1", "fed.notify.galley.on-poison.b.example.com",
			"federation-remote-error", "remote 400 federation-denied: rpc on-poison is not allowed", "1 dead letter(s) shown"}},
		{name: "dead list of another domain", args: "notifications dead list c.example.com", want: []string{"0 dead letter(s) shown"}},
		{name: "retry", args: "notifications retry B.example.com", want: []string{"b.example.com: next attempt now"}},
		{name: "retry, not failing", args: "notifications retry c.example.com", want: []string{"is not failing"}},
		{name: "replay", args: "notifications dead replay -domain b.example.com", want: []string{"replayed 1: fed.notify.galley.on-poison.b.example.com (id poison-1)", "1 dead letter(s) replayed"}},
		{name: "list after replay", args: "notifications list", want: []string{"b.example.com  4"}},
		{name: "purge", args: "notifications purge b.example.com", want: []string{"purged 4 notification(s) to b.example.com"}},
		{name: "list after purge", args: "notifications list", want: []string{"1 destination(s), 1 notification(s) waiting"}},
		{name: "replay nothing", args: "notifications dead replay", err: ErrUsage},
		{name: "replay a bad sequence", args: "notifications dead replay x", err: ErrUsage},
		{name: "retry without a domain", args: "notifications retry", err: ErrUsage},
		{name: "unknown", args: "notifications frobnicate", err: ErrUsage},
		{name: "no command", args: "notifications", err: ErrUsage},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			out, err := run(st.args)
			if st.err != nil {
				if !errors.Is(err, st.err) {
					t.Fatalf("got %v (output %q), want %v", err, out, st.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range st.want {
				if !strings.Contains(out, w) {
					t.Fatalf("output %q lacks %q", out, w)
				}
			}
		})
	}
	if st, _ := store.State(ctx, "b.example.com"); st.Attempts != 0 {
		t.Fatalf("state after purge: %+v", st)
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{42 * time.Second: "42s", 192 * time.Second: "3m12s", 5*time.Hour + 3*time.Minute: "5h3m", 52 * time.Hour: "2d4h"} {
		if got := age(d); got != want {
			t.Errorf("age(%s) = %q, want %q", d, got, want)
		}
	}
}
