package bus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/nats-io/nats.go"
)

// fakeFederator is a plain queue subscriber on fed.out.> that answers by rpc.
type fakeFederator struct {
	mu     sync.Mutex
	seen   []bus.Event
	routes []contract.Route
}

func (f *fakeFederator) last(tb testing.TB) (bus.Event, contract.Route) {
	tb.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.seen) == 0 {
		tb.Fatal("the federator saw no request")
	}
	return f.seen[len(f.seen)-1], f.routes[len(f.routes)-1]
}

// startFederator subscribes a fake federator on nc.
func startFederator(tb testing.TB, nc *nats.Conn, subjects contract.Subjects) *fakeFederator {
	tb.Helper()
	f := &fakeFederator{}
	respond := func(msg *nats.Msg, ev bus.Event) {
		if err := msg.RespondMsg(ev.Message(msg.Reply)); err != nil {
			tb.Errorf("federator respond: %v", err)
		}
	}
	sub, err := nc.QueueSubscribe(subjects.OutAll(), contract.FederatorQueueGroup, func(msg *nats.Msg) {
		ev, err := bus.Decode(msg)
		if err != nil {
			respond(msg, bus.ErrorReply(bus.WantsStructured(msg), "/federator", contract.AsError(err)))
			return
		}
		route, err := subjects.ParseOut(msg.Subject)
		if err != nil {
			respond(msg, bus.ErrorReply(ev.Structured, "/federator", contract.AsError(err)))
			return
		}
		f.mu.Lock()
		f.seen = append(f.seen, ev)
		f.routes = append(f.routes, route)
		f.mu.Unlock()
		switch route.RPC {
		case "echo":
			respond(msg, bus.Reply(ev, "/federator", ev.Data))
		case "remote-fail":
			respond(msg, bus.ErrorReply(ev.Structured, "/federator",
				contract.RemoteError(contract.Errorf(contract.LabelInvalidDomain, "no SRV for %s", route.Domain))))
		case "deny":
			respond(msg, bus.ErrorReply(ev.Structured, "/federator", contract.Errorf(contract.LabelFederationDenied, "%s not allowed", route.Domain)))
		case "html-error":
			respond(msg, bus.Event{ID: bus.NewID(), Source: "/federator", Type: contract.TypeError, Data: []byte("<html>oops</html>")})
		case "not-cloudevent":
			if err := msg.Respond([]byte("plain reply")); err != nil {
				tb.Errorf("federator respond: %v", err)
			}
		case "slow":
			// Never answers in time: the caller's deadline ends first.
		default:
			respond(msg, bus.ErrorReply(ev.Structured, "/federator", contract.Errorf(contract.LabelInvalidEndpoint, "unknown rpc %s", route.RPC)))
		}
	})
	if err != nil {
		tb.Fatalf("federator subscribe: %v", err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatalf("flush: %v", err)
	}
	tb.Cleanup(func() { _ = sub.Unsubscribe() })
	return f
}

func TestClientCall(t *testing.T) {
	url := startNATS(t)
	subjects := newSubjects(t, contract.DefaultPrefix)
	fed := startFederator(t, connect(t, url), subjects)
	client := bus.NewClient(connect(t, url), subjects, "/brig")

	t.Run("success", func(t *testing.T) {
		body := []byte(`{"handle":"alice"}`)
		got, err := client.Call(testCtx(t, 5*time.Second), "B.Example.com", "brig", "echo", body,
			bus.WithID("req-42"), bus.WithTraceParent(testTraceParent))
		if err != nil {
			t.Fatalf("Call: %v", err)
		}
		if string(got) != string(body) {
			t.Errorf("body = %s, want %s", got, body)
		}
		ev, route := fed.last(t)
		if want := (contract.Route{Component: "brig", RPC: "echo", Domain: "b.example.com"}); route != want {
			t.Errorf("route = %+v, want %+v", route, want)
		}
		if ev.ID != "req-42" || ev.Source != "/brig" || ev.Type != contract.TypeRequest || ev.TraceParent != testTraceParent || ev.Structured {
			t.Errorf("request event = %+v", ev)
		}
		if ev.TimeoutMs <= 0 || ev.TimeoutMs > 5000 {
			t.Errorf("timeoutms = %d, want in (0, 5000]", ev.TimeoutMs)
		}
	})

	t.Run("new id and default timeout", func(t *testing.T) {
		if _, err := client.Call(context.Background(), "b.example.com", "galley", "echo", nil); err != nil {
			t.Fatalf("Call: %v", err)
		}
		ev, _ := fed.last(t)
		if !contract.ValidRequestID(ev.ID) {
			t.Errorf("generated id %q", ev.ID)
		}
		if ev.TimeoutMs <= 0 || ev.TimeoutMs > bus.DefaultTimeout.Milliseconds() {
			t.Errorf("timeoutms = %d, want in (0, %d]", ev.TimeoutMs, bus.DefaultTimeout.Milliseconds())
		}
	})

	errTests := []struct {
		name      string
		component string
		rpc       string
		want      *contract.Error
		check     func(t *testing.T, e *contract.Error)
	}{
		{"remote error keeps inner", "brig", "remote-fail", contract.ErrRemoteError, func(t *testing.T, e *contract.Error) {
			if e.Inner == nil || e.Inner.Label != contract.LabelInvalidDomain || e.Inner.Code != 422 || !strings.Contains(e.Inner.Message, "b.example.com") {
				t.Errorf("inner = %+v", e.Inner)
			}
		}},
		{"typed local error", "brig", "deny", contract.ErrFederationDenied, nil},
		{"error body not a contract error", "brig", "html-error", &contract.Error{Code: 500, Label: contract.LabelUnknownError}, func(t *testing.T, e *contract.Error) {
			if e.Message != "<html>oops</html>" {
				t.Errorf("message = %q", e.Message)
			}
		}},
		{"reply not a CloudEvent", "brig", "not-cloudevent", &contract.Error{Code: 500, Label: contract.LabelServerError}, nil},
		{"no responders", "cargohold", "echo", contract.ErrComponentUnavailable, nil},
	}
	for _, tc := range errTests {
		t.Run(tc.name, func(t *testing.T) {
			c := client
			if tc.name == "no responders" {
				// Another prefix: nothing subscribes to it.
				c = bus.NewClient(connect(t, url), newSubjects(t, "other"), "/cargohold")
			}
			_, err := c.Call(testCtx(t, 5*time.Second), "b.example.com", tc.component, tc.rpc, []byte(`{}`))
			e := wantBusError(t, err, tc.want)
			if tc.check != nil {
				tc.check(t, e)
			}
		})
	}

	t.Run("slow responder and short deadline", func(t *testing.T) {
		start := time.Now()
		_, err := client.Call(testCtx(t, 100*time.Millisecond), "b.example.com", "brig", "slow", nil)
		wantBusError(t, err, contract.ErrTimeout)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("timed out after %v", d)
		}
	})
	t.Run("slow responder and client timeout", func(t *testing.T) {
		c := bus.NewClient(connect(t, url), subjects, "/brig")
		c.Timeout = 100 * time.Millisecond
		_, err := c.Call(context.Background(), "b.example.com", "brig", "slow", nil)
		wantBusError(t, err, contract.ErrTimeout)
	})
	t.Run("zero client timeout leaves calls unbounded", func(t *testing.T) {
		c := bus.NewClient(connect(t, url), subjects, "/brig")
		c.Timeout = 0
		if _, err := c.Call(context.Background(), "b.example.com", "brig", "echo", nil); err != nil {
			t.Fatalf("Call: %v", err)
		}
		if ev, _ := fed.last(t); ev.TimeoutMs != 0 {
			t.Errorf("timeoutms = %d, want none", ev.TimeoutMs)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(testCtx(t, 5*time.Second))
		cancel()
		_, err := client.Call(ctx, "b.example.com", "brig", "echo", nil)
		wantBusError(t, err, contract.ErrTimeout)
	})
}

func TestClientBadTokensNeverPublished(t *testing.T) {
	url := startNATS(t)
	subjects := newSubjects(t, contract.DefaultPrefix)

	// A spy sees every message on the server.
	spy := connect(t, url)
	var mu sync.Mutex
	var seen []string
	if _, err := spy.Subscribe(">", func(m *nats.Msg) {
		mu.Lock()
		seen = append(seen, m.Subject)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	nc := connect(t, url)
	client := bus.NewClient(nc, subjects, "/brig")

	tests := []struct {
		name                   string
		domain, component, rpc string
		want                   *contract.Error
	}{
		{"star domain", "*", "brig", "rpc", contract.ErrDomainParseError},
		{"star label", "*.example.com", "brig", "rpc", contract.ErrDomainParseError},
		{"gt domain", ">", "brig", "rpc", contract.ErrDomainParseError},
		{"space in domain", "b example.com", "brig", "rpc", contract.ErrDomainParseError},
		{"double dot", "b..example.com", "brig", "rpc", contract.ErrDomainParseError},
		{"300-char domain", strings.Repeat("a.", 150)[:299] + "a", "brig", "rpc", contract.ErrDomainParseError},
		{"star component", "b.example.com", "*", "rpc", contract.ErrInvalidEndpoint},
		{"gt component", "b.example.com", ">", "rpc", contract.ErrInvalidEndpoint},
		{"upper-case component", "b.example.com", "Brig", "rpc", contract.ErrInvalidEndpoint},
		{"star rpc", "b.example.com", "brig", "*", contract.ErrInvalidEndpoint},
		{"gt rpc", "b.example.com", "brig", ">", contract.ErrInvalidEndpoint},
		{"space in rpc", "b.example.com", "brig", "get user", contract.ErrInvalidEndpoint},
		{"dotted rpc", "b.example.com", "brig", "a.b", contract.ErrInvalidEndpoint},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.Call(testCtx(t, 5*time.Second), tc.domain, tc.component, tc.rpc, []byte(`{}`))
			wantBusError(t, err, tc.want)
		})
	}

	// Publish a marker after the bad calls on the same connection: once the
	// spy has it, anything published before it has arrived too.
	if err := nc.Publish("marker", nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the marker", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(seen, "marker")
	})
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 1 {
		t.Errorf("messages published: %q, want only the marker", seen)
	}
}

// whoami is what the test handler returns for rpc "whoami".
type whoami struct {
	ID, Origin, Component, RPC, TraceParent, Body string
	Deadline                                      bool
}

// testServer starts bus.Serve for component on its own connection.
type testServer struct {
	srv     *bus.Server
	started chan string   // ids of "block" requests, as their handlers start
	release chan struct{} // closed by releaseAll to let "block" handlers return
	once    sync.Once
	mu      sync.Mutex
	ids     []string // ids of every request a handler saw
}

func (s *testServer) releaseAll() { s.once.Do(func() { close(s.release) }) }

func (s *testServer) handledIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ids)
}

func startServer(tb testing.TB, nc *nats.Conn, subjects contract.Subjects, component string) *testServer {
	tb.Helper()
	ts := &testServer{started: make(chan string, 16), release: make(chan struct{})}
	handler := func(ctx context.Context, req *bus.Request) ([]byte, error) {
		ts.mu.Lock()
		ts.ids = append(ts.ids, req.ID)
		ts.mu.Unlock()
		switch req.RPC {
		case "whoami":
			_, dl := ctx.Deadline()
			return json.Marshal(whoami{req.ID, req.Origin, req.Component, req.RPC, req.TraceParent, string(req.Body), dl})
		case "typed":
			return nil, contract.Errorf(contract.LabelFederationDenied, "not for %s", req.Origin)
		case "typed-wrapped":
			return nil, fmt.Errorf("lookup: %w", contract.Errorf(contract.LabelInvalidDomain, "gone"))
		case "plain":
			return nil, errors.New("database is down")
		case "deadline":
			<-ctx.Done()
			return nil, ctx.Err()
		case "block":
			ts.started <- req.ID
			<-ts.release
			return []byte(`"released"`), nil
		}
		return nil, contract.Errorf(contract.LabelInvalidEndpoint, "no rpc %s", req.RPC)
	}
	srv, err := bus.Serve(context.Background(), nc, subjects, component, handler, discardLogger())
	if err != nil {
		tb.Fatalf("Serve: %v", err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	ts.srv = srv
	tb.Cleanup(func() {
		ts.releaseAll()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
	})
	return ts
}

// inbound builds an inbound request as the ingress publishes it.
func inbound(tb testing.TB, subjects contract.Subjects, component, rpc, origin string, ev bus.Event) *nats.Msg {
	tb.Helper()
	subject, err := subjects.In(component, rpc, origin)
	if err != nil {
		tb.Fatalf("In: %v", err)
	}
	if ev.ID == "" {
		ev.ID = bus.NewID()
	}
	if ev.Source == "" {
		ev.Source = "//" + origin + "/" + component
	}
	if ev.Type == "" {
		ev.Type = contract.TypeRequest
	}
	return ev.Message(subject)
}

func TestServe(t *testing.T) {
	url := startNATS(t)
	subjects := newSubjects(t, contract.DefaultPrefix)
	startServer(t, connect(t, url), subjects, "brig")
	caller := connect(t, url)

	t.Run("handler sees the request", func(t *testing.T) {
		msg := inbound(t, subjects, "brig", "whoami", "a.example.com", bus.Event{
			ID: "req-7", OriginDomain: "a.example.com", TraceParent: testTraceParent, TimeoutMs: 3000, Data: []byte(`{"q":1}`),
		})
		body, err := bus.Exchange(testCtx(t, 5*time.Second), caller, msg)
		if err != nil {
			t.Fatalf("Exchange: %v", err)
		}
		var got whoami
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("reply %s: %v", body, err)
		}
		want := whoami{ID: "req-7", Origin: "a.example.com", Component: "brig", RPC: "whoami", TraceParent: testTraceParent, Body: `{"q":1}`, Deadline: true}
		if got != want {
			t.Errorf("handler saw %+v, want %+v", got, want)
		}
	})

	errTests := []struct {
		name  string
		rpc   string
		ev    bus.Event
		want  *contract.Error
		check func(t *testing.T, e *contract.Error)
	}{
		{"typed error", "typed", bus.Event{}, contract.ErrFederationDenied, func(t *testing.T, e *contract.Error) {
			if e.Message != "not for a.example.com" {
				t.Errorf("message = %q", e.Message)
			}
		}},
		{"wrapped typed error", "typed-wrapped", bus.Event{}, contract.ErrInvalidDomain, nil},
		{"plain error is server-error", "plain", bus.Event{}, &contract.Error{Code: 500, Label: contract.LabelServerError}, func(t *testing.T, e *contract.Error) {
			if !strings.Contains(e.Message, "database is down") {
				t.Errorf("message = %q", e.Message)
			}
		}},
		{"handler deadline from timeoutms", "deadline", bus.Event{TimeoutMs: 20}, contract.ErrTimeout, nil},
		{"origin header disagrees with subject", "whoami", bus.Event{OriginDomain: "evil.example.com"}, contract.ErrNoOriginDomain, nil},
		{"unknown rpc", "nope", bus.Event{}, contract.ErrInvalidEndpoint, nil},
	}
	for _, tc := range errTests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := bus.Exchange(testCtx(t, 5*time.Second), caller, inbound(t, subjects, "brig", tc.rpc, "a.example.com", tc.ev))
			e := wantBusError(t, err, tc.want)
			if tc.check != nil {
				tc.check(t, e)
			}
		})
	}

	modes := []struct {
		name       string
		structured bool
		rpc        string
		wantType   string
	}{
		{"binary success", false, "whoami", contract.TypeResponse},
		{"structured success", true, "whoami", contract.TypeResponse},
		{"binary error", false, "plain", contract.TypeError},
		{"structured error", true, "plain", contract.TypeError},
	}
	for _, tc := range modes {
		t.Run("reply mode/"+tc.name, func(t *testing.T) {
			msg := inbound(t, subjects, "brig", tc.rpc, "a.example.com", bus.Event{ID: "m1", Structured: tc.structured, Data: []byte(`{}`)})
			reply, err := caller.RequestMsg(msg, 5*time.Second)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			if got := bus.WantsStructured(reply); got != tc.structured {
				t.Errorf("reply structured = %v, want %v (headers %v)", got, tc.structured, reply.Header)
			}
			ev := decodeOK(t, reply)
			if ev.Type != tc.wantType || ev.Source != "/brig" || ev.Structured != tc.structured {
				t.Errorf("reply = %+v", ev)
			}
			if tc.wantType == contract.TypeResponse {
				var w whoami
				if err := json.Unmarshal(ev.Data, &w); err != nil || w.ID != "m1" {
					t.Errorf("reply body %s: %v", ev.Data, err)
				}
			}
		})
	}

	invalid := []struct {
		name       string
		msg        func(subject string) *nats.Msg
		structured bool
		want       *contract.Error
	}{
		{"no headers", func(s string) *nats.Msg { return &nats.Msg{Subject: s, Data: []byte(`{}`)} }, false, contract.ErrInvalidRequest},
		{"structured body not JSON", func(s string) *nats.Msg {
			return &nats.Msg{Subject: s, Header: nats.Header{contract.HeaderContentType: []string{contract.ContentTypeCEJSON}}, Data: []byte("<xml/>")}
		}, true, contract.ErrInvalidRequest},
		{"structured JSON missing id", func(s string) *nats.Msg {
			return &nats.Msg{Subject: s, Header: nats.Header{contract.HeaderContentType: []string{contract.ContentTypeCEJSON}},
				Data: []byte(`{"specversion":"1.0","source":"/x","type":"fedbus.request"}`)}
		}, true, contract.ErrInvalidRequest},
		{"bad rpc token in subject", func(string) *nats.Msg {
			return bus.Event{ID: "1", Source: "/x", Type: contract.TypeRequest}.Message("fed.in.brig.bad~rpc.a.example.com")
		}, false, contract.ErrInvalidEndpoint},
		{"bad domain in subject", func(string) *nats.Msg {
			return bus.Event{ID: "1", Source: "/x", Type: contract.TypeRequest}.Message("fed.in.brig.whoami.localhost")
		}, false, contract.ErrDomainParseError},
	}
	for _, tc := range invalid {
		t.Run("invalid/"+tc.name, func(t *testing.T) {
			msg := tc.msg("fed.in.brig.whoami.a.example.com")
			reply, err := caller.RequestMsg(msg, 5*time.Second)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			if got := bus.WantsStructured(reply); got != tc.structured {
				t.Errorf("reply structured = %v, want %v", got, tc.structured)
			}
			ev := decodeOK(t, reply)
			if ev.Type != contract.TypeError {
				t.Fatalf("reply type %q", ev.Type)
			}
			e := contract.ParseError(0, ev.Data)
			if !errors.Is(e, tc.want) || e.Code != tc.want.Code {
				t.Errorf("reply error = %+v, want %s", e, tc.want.Label)
			}
		})
	}
}

func TestServeDropsRequestWithoutReply(t *testing.T) {
	url := startNATS(t)
	subjects := newSubjects(t, contract.DefaultPrefix)
	ts := startServer(t, connect(t, url), subjects, "brig")
	caller := connect(t, url)

	if err := caller.PublishMsg(inbound(t, subjects, "brig", "whoami", "a.example.com", bus.Event{ID: "dropped"})); err != nil {
		t.Fatal(err)
	}
	// The server still serves afterwards.
	if _, err := bus.Exchange(testCtx(t, 5*time.Second), caller, inbound(t, subjects, "brig", "whoami", "a.example.com", bus.Event{ID: "answered"})); err != nil {
		t.Fatalf("Exchange after a dropped request: %v", err)
	}
	if err := ts.srv.Shutdown(testCtx(t, 5*time.Second)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if ids := ts.handledIDs(); !reflect.DeepEqual(ids, []string{"answered"}) {
		t.Errorf("handlers saw %q, want only [answered]", ids)
	}
}

func TestServeShutdownWaitsForInFlight(t *testing.T) {
	url := startNATS(t)
	subjects := newSubjects(t, contract.DefaultPrefix)
	ts := startServer(t, connect(t, url), subjects, "brig")
	caller := connect(t, url)

	const n = 3
	type result struct {
		body []byte
		err  error
	}
	results := make(chan result, n)
	ctx := testCtx(t, 10*time.Second)
	for i := range n {
		msg := inbound(t, subjects, "brig", "block", "a.example.com", bus.Event{ID: fmt.Sprintf("b%d", i)})
		go func() {
			body, err := bus.Exchange(ctx, caller, msg)
			results <- result{body, err}
		}()
	}
	for range n {
		select {
		case <-ts.started:
		case <-time.After(5 * time.Second):
			t.Fatal("handlers did not start")
		}
	}

	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(ctx) }()
	// Shutdown cannot return while the handlers are blocked; give it a
	// moment to do so wrongly.
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while handlers were running", err)
	case <-time.After(100 * time.Millisecond):
	}
	// New requests are refused meanwhile: the subscription is draining.
	probe := inbound(t, subjects, "brig", "whoami", "a.example.com", bus.Event{})
	waitFor(t, 5*time.Second, "the subscription to go", func() bool {
		_, err := bus.Exchange(ctx, caller, probe)
		return errors.Is(err, contract.ErrComponentUnavailable)
	})

	ts.releaseAll()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the handlers finished")
	}
	// Every in-flight request got its reply, sent after the drain.
	for range n {
		r := <-results
		if r.err != nil || string(r.body) != `"released"` {
			t.Errorf("in-flight request: %s, %v", r.body, r.err)
		}
	}
}

func TestServeShutdownContextEnds(t *testing.T) {
	url := startNATS(t)
	subjects := newSubjects(t, contract.DefaultPrefix)
	ts := startServer(t, connect(t, url), subjects, "brig")
	caller := connect(t, url)

	ctx, msg := testCtx(t, 10*time.Second), inbound(t, subjects, "brig", "block", "a.example.com", bus.Event{})
	go func() { _, _ = bus.Exchange(ctx, caller, msg) }()
	select {
	case <-ts.started:
	case <-time.After(5 * time.Second):
		t.Fatal("handler did not start")
	}
	err := ts.srv.Shutdown(testCtx(t, 50*time.Millisecond))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want context.DeadlineExceeded", err)
	}
	// The cleanup releases the handler and shuts down again.
}

func TestServeRefusesBadComponent(t *testing.T) {
	url := startNATS(t)
	nc := connect(t, url)
	for _, c := range []string{"", "*", ">", "Brig", "br ig", "a.b"} {
		t.Run(c, func(t *testing.T) {
			srv, err := bus.Serve(context.Background(), nc, newSubjects(t, "fed"), c, func(context.Context, *bus.Request) ([]byte, error) { return nil, nil }, discardLogger())
			if !errors.Is(err, contract.ErrInvalidEndpoint) || srv != nil {
				t.Errorf("Serve(%q) = %v, %v; want invalid-endpoint", c, srv, err)
			}
		})
	}
}

func TestServeNoGoroutineLeak(t *testing.T) {
	url := startNATS(t)
	subjects := newSubjects(t, contract.DefaultPrefix)
	snc, caller := connect(t, url), connect(t, url)
	// Warm up the caller's response subscription, which lives as long as
	// the connection.
	if _, err := bus.Exchange(testCtx(t, 5*time.Second), caller, inbound(t, subjects, "brig", "whoami", "a.example.com", bus.Event{})); !errors.Is(err, contract.ErrComponentUnavailable) {
		t.Fatalf("warm-up: %v", err)
	}

	before := runtime.NumGoroutine()
	ts := startServer(t, snc, subjects, "brig")
	var wg sync.WaitGroup
	var failed atomic.Int32
	ctx := testCtx(t, 5*time.Second)
	for i := range 50 {
		rpc := []string{"whoami", "plain", "typed"}[i%3]
		msg := inbound(t, subjects, "brig", rpc, "a.example.com", bus.Event{})
		wg.Go(func() {
			_, err := bus.Exchange(ctx, caller, msg)
			if rpc == "whoami" && err != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 {
		t.Errorf("%d requests failed", failed.Load())
	}
	if err := ts.srv.Shutdown(testCtx(t, 5*time.Second)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	var after int
	waitFor(t, 5*time.Second, "goroutines to end", func() bool {
		after = runtime.NumGoroutine()
		return after <= before
	})
	t.Logf("goroutines: %d before Serve, %d after Shutdown", before, after)
}
