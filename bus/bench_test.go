package bus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
)

var (
	benchStr   string
	benchEvent bus.Event
)

func benchRequest() bus.Event {
	return bus.Event{
		ID: "2bCjq5Ws1yDkaNU3x5Pbe7", Source: "/brig", Type: contract.TypeRequest,
		TraceParent: testTraceParent, TimeoutMs: 9876,
		Data: []byte(`{"handle":"alice","domain":"b.example.com"}`),
	}
}

func BenchmarkEncodeBinary(b *testing.B) {
	ev := benchRequest()
	b.ReportAllocs()
	for b.Loop() {
		if msg := ev.Message("fed.out.brig.get-user-by-handle.b.example.com"); msg == nil {
			b.Fatal("nil message")
		}
	}
}

func BenchmarkDecodeBinary(b *testing.B) {
	msg := benchRequest().Message("fed.out.brig.get-user-by-handle.b.example.com")
	b.ReportAllocs()
	for b.Loop() {
		ev, err := bus.Decode(msg)
		if err != nil {
			b.Fatal(err)
		}
		benchEvent = ev
	}
}

// BenchmarkCallServe is one bus round trip on an in-process NATS server:
// Client.Call → fed.out subject (mapped by the test onto fed.in) →
// Serve's echo handler → reply. It includes both ends and the server.
func BenchmarkCallServe(b *testing.B) {
	url := startNATS(b)
	subjects := newSubjects(b, contract.DefaultPrefix)
	srv := connect(b, url)
	ctx := testCtx(b, time.Hour)
	echo := func(_ context.Context, req *bus.Request) ([]byte, error) { return req.Body, nil }
	s, err := bus.Serve(ctx, srv, subjects, "brig", echo, discardLogger())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Shutdown(ctx) })
	// The client publishes fed.out.brig.echo.b.example.com; relay it to
	// the component's fed.in subject as a federator would.
	in, err := subjects.In("brig", "echo", "a.example.com")
	if err != nil {
		b.Fatal(err)
	}
	relay, err := srv.Subscribe("fed.out.brig.echo.b.example.com", func(m *nats.Msg) {
		m.Subject = in
		_ = srv.PublishMsg(m)
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = relay.Unsubscribe() })
	cli := bus.NewClient(connect(b, url), subjects, "/brig")
	body := make([]byte, 256)
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := cli.Call(ctx, "b.example.com", "brig", "echo", body); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
