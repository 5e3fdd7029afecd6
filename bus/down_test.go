package bus_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

// TestNATSDownIsComponentUnavailable: while the connection is down
// (reconnecting), a request is not sent and waits for nothing: it fails at
// once with component-unavailable, through a *nats.Conn and through a
// Requester (the ingress's), instead of federation-timeout at its
// deadline.
func TestNATSDownIsComponentUnavailable(t *testing.T) {
	s, err := testbed.StartNATS("")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	req, err := bus.NewRequester(nc, nil, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = req.Close() })
	stop(s)
	waitFor(t, 5*time.Second, "the connection to notice", func() bool { return !nc.IsConnected() })
	subjects := newSubjects(t, "fed")
	for name, d := range map[string]bus.Doer{"nats.Conn": nc, "Requester": req} {
		t.Run(name, func(t *testing.T) {
			// A deadline far away: a request that waited would fail the
			// test by its label (federation-timeout), not by its time.
			ctx := testCtx(t, time.Minute)
			_, err := bus.NewClient(d, subjects, "/brig").Call(ctx, "b.example.com", "brig", "get-user-by-handle", []byte(`"alice"`))
			wantBusError(t, err, contract.ErrComponentUnavailable)
		})
	}
}

func stop(s *server.Server) {
	s.Shutdown()
	s.WaitForShutdown()
}

// TestProbeInbox: a connection whose inbox the server refuses is told at
// once; an allowed one passes; a connection without the option that makes
// the refusal visible cannot be probed.
func TestProbeInbox(t *testing.T) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*server.User{{Username: "svc", Password: "pw", Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{">"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX_svc.>"}},
		}}}}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { stop(s) })
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("not ready")
	}
	dial := func(t *testing.T, extra ...nats.Option) *nats.Conn {
		quiet := nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})
		nc, err := nats.Connect(s.ClientURL(), append([]nats.Option{nats.UserInfo("svc", "pw"), quiet}, extra...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	tests := []struct {
		name string
		opts []nats.Option
		want error
	}{
		{name: "default inbox refused", opts: []nats.Option{nats.PermissionErrOnSubscribe(true)}, want: nats.ErrPermissionViolation},
		{name: "own inbox prefix", opts: []nats.Option{nats.PermissionErrOnSubscribe(true), nats.CustomInboxPrefix("_INBOX_svc")}},
		{name: "without the option", want: bus.ErrProbeOption},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := bus.ProbeInbox(dial(t, tt.opts...), 5*time.Second)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}
