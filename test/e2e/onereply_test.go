package e2e

import (
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// TestExactlyOneReplyPerRequest sends a few thousand concurrent requests
// that mix successes and every kind of failure, counts the replies on each
// request's own inbox, and checks that no goroutine is left afterwards.
func TestExactlyOneReplyPerRequest(t *testing.T) {
	baseline := runtime.NumGoroutine()
	t.Run("load", func(t *testing.T) { oneReplyLoad(t) })
	// Everything of the load was closed by its cleanups: goroutines return
	// to the baseline (poll: closing connections takes a moment).
	deadline := time.Now().Add(15 * time.Second)
	for runtime.NumGoroutine() > baseline+2 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("goroutine leak: %d now, %d before\n%s", runtime.NumGoroutine(), baseline, buf[:n])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func oneReplyLoad(t *testing.T) {
	w := newWorld(t, "nosrv.example.com", "closed.example.com", "dot.example.com", "big.example.com")
	w.bigRemote(t)
	// The burst below puts well over FED_MAX_IN_FLIGHT_PER_REMOTE requests
	// to B in flight at once; that limit has its own test.
	for _, f := range w.a.Federators {
		f.SetMaxPerRemote(0)
	}
	serve(t, w.b, "brig", component)
	w.dns.SetSRV("closed.example.com", 60, testbed.SRVRecord{Target: "closed.infra.test", Port: closedPort(t), Priority: 1, Weight: 1})
	mustSetA(t, w.dns, "closed.infra.test", "127.0.0.1")
	w.dns.SetSRV("dot.example.com", 60, testbed.SRVRecord{Target: "."})

	// kinds of request: subject, body, headers, expected reply type/label.
	type kind struct {
		name    string
		subject string
		body    string
		headers nats.Header
		label   string // "" for success
		object  bool   // a success whose body is an object (contract section 8)
	}
	ce := func(timeoutMs string) nats.Header {
		h := nats.Header{contract.HeaderSpecVersion: {"1.0"}, contract.HeaderSource: {"/test"}, contract.HeaderType: {contract.TypeRequest}}
		if timeoutMs != "" {
			h[contract.HeaderTimeoutMs] = []string{timeoutMs}
		}
		return h
	}
	kinds := []kind{
		{name: "success", subject: "fed.out.brig.echo.b.example.com", body: `{"ok":true}`, headers: ce("")},
		{name: "denied", subject: "fed.out.brig.echo.denied.example.com", body: `{}`, headers: ce(""), label: contract.LabelFederationDenied},
		{name: "no srv", subject: "fed.out.brig.echo.nosrv.example.com", body: `{}`, headers: ce(""), label: contract.LabelInvalidDomain},
		{name: "dot", subject: "fed.out.brig.echo.dot.example.com", body: `{}`, headers: ce(""), label: contract.LabelInvalidDomain},
		{name: "closed port", subject: "fed.out.brig.echo.closed.example.com", body: `{}`, headers: ce(""), label: contract.LabelConnectionRefused},
		{name: "not a cloudevent", subject: "fed.out.brig.echo.b.example.com", body: `{}`, headers: nats.Header{"x": {"y"}}, label: contract.LabelInvalidRequest},
		{name: "upper case component", subject: "fed.out.BRIG.echo.b.example.com", body: `{}`, headers: ce(""), label: contract.LabelInvalidEndpoint},
		{name: "long domain", subject: "fed.out.brig.echo." + strings.Repeat("a.", 150) + "com", body: `{}`, headers: ce(""), label: contract.LabelDomainParseError},
		{name: "unknown component", subject: "fed.out.spar.echo.b.example.com", body: `{}`, headers: ce(""), label: contract.LabelUnknownComponent},
		{name: "remote unavailable", subject: "fed.out.galley.echo.b.example.com", body: `{}`, headers: ce(""), label: contract.LabelRemoteError},
		{name: "remote slow", subject: "fed.out.brig.slow.b.example.com", body: `5000`, headers: ce("300"), label: contract.LabelTimeout},
	}
	// Over-size kinds, one request in 100 and one in 300 (they move a MiB
	// or more each):
	// a body that A's NATS carries but B's ingress may not accept, and a
	// remote's answer of 2 MiB (through A's object store).
	large := []kind{
		{name: "body over the remote's limit", subject: "fed.out.brig.echo.b.example.com", body: strings.Repeat("x", overIngressLimit), headers: ce(""), label: contract.LabelRemoteError},
		{name: "remote answer of 2 MiB", subject: "fed.out.brig.echo.big.example.com", body: `"big"`, headers: ce(""), object: true},
	}
	kindOf := func(i int) kind {
		switch {
		case i%100 == 7:
			return large[0]
		case i%300 == 57:
			// Each is two object store transfers of 2 MiB: ten of them
			// keep the storm within its deadlines on a busy machine.
			return large[1]
		}
		return kinds[i%len(kinds)]
	}

	const total = 3000
	nc := w.a.NATS
	replies := make([][]*nats.Msg, total)
	var mu sync.Mutex
	var got int
	inbox := nats.NewInbox()
	sub, err := nc.Subscribe(inbox+".*", func(m *nats.Msg) {
		var i int
		if _, err := fmt.Sscanf(m.Subject[len(inbox)+1:], "%d", &i); err != nil || i < 0 || i >= total {
			t.Errorf("reply on unexpected subject %s", m.Subject)
			return
		}
		mu.Lock()
		replies[i] = append(replies[i], m)
		got++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	for i := range total {
		k := kindOf(i)
		h := nats.Header{}
		for key, v := range k.headers {
			h[key] = v
		}
		h[contract.HeaderID] = []string{fmt.Sprintf("req-%d", i)}
		msg := &nats.Msg{Subject: k.subject, Reply: fmt.Sprintf("%s.%d", inbox, i), Header: h, Data: []byte(k.body)}
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 60*time.Second, "a reply to every request", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return got >= total
	})
	// Give duplicates a chance to show up: a round trip through both
	// servers after the last reply.
	for _, be := range []*fedtest.Backend{w.a, w.b} {
		if err := be.NATS.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	byLabel := map[string]int{}
	for i, rs := range replies {
		k := kindOf(i)
		if len(rs) != 1 {
			t.Fatalf("request %d (%s) got %d replies", i, k.name, len(rs))
		}
		ev, err := bus.Decode(rs[0])
		if err != nil {
			t.Fatalf("request %d (%s): reply is not a CloudEvent: %v", i, k.name, err)
		}
		label := ""
		if ev.Type == contract.TypeError {
			label = contract.ParseError(500, ev.Data).Label
		}
		if label != k.label {
			t.Fatalf("request %d (%s): reply label %q, want %q (%s)", i, k.name, label, k.label, ev.Data)
		}
		if k.object != !ev.Object.IsZero() {
			t.Fatalf("request %d (%s): reply object %v, want one: %v", i, k.name, ev.Object, k.object)
		}
		byLabel[k.name]++
	}
	t.Logf("%d requests, %d replies, by kind: %v", total, got, byLabel)
}
