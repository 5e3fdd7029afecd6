package federator

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/fedbus/fedbus/metrics"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
)

// The federator's request path without the network: the remote ingress is
// a RoundTripper that answers 200 with a canned body of the request's
// size, so that the benchmarks measure the federator's own work (decode,
// route, policy, cached discovery, request building, response reading,
// reply encoding and, for BenchmarkFederatorHandle, the reply's NATS
// publish).

const (
	benchOrigin = "a.example.com"
	benchTarget = "b.example.com"
	benchInfraB = "fed.b-infra.example.net"
)

// benchEchoTransport answers every request with 200 and a body of the
// request's Content-Length (the request body itself is not read, as the
// wire would do it).
type benchEchoTransport struct{ body []byte }

func (t benchEchoTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return &http.Response{
		StatusCode:    http.StatusOK,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        http.Header{"Content-Type": []string{contract.ContentTypeJSON}},
		Body:          io.NopCloser(bytes.NewReader(t.body[:req.ContentLength])),
		ContentLength: req.ContentLength,
		Request:       req,
	}, nil
}

// benchFederator returns a federator of benchOrigin whose remote calls go
// to benchEchoTransport, with the SRV record of benchTarget cached, and a
// NATS connection to an embedded server.
func benchFederator(b *testing.B, maxBody int) (*Federator, *nats.Conn) {
	b.Helper()
	tf := newTestFederator(b, testFederatorOptions{transport: benchEchoTransport{body: bytes.Repeat([]byte("a"), maxBody)}})
	// Fill the discovery cache.
	if _, err := tf.f.deps.Resolver.SRV(context.Background(), benchTarget); err != nil {
		b.Fatal(err)
	}
	return tf.f, tf.nc
}

var benchSizes = []int{256, 64 << 10}

func benchSizeName(n int) string {
	if n >= 1<<10 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// BenchmarkFederatorHandle is one request through Federator.handle: the
// CloudEvent is decoded, routed, checked, sent (to the fake remote) and
// answered; the reply is published on NATS (to an inbox nobody reads).
func BenchmarkFederatorHandle(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(benchSizeName(size), func(b *testing.B) {
			f, nc := benchFederator(b, size)
			subject, err := f.subjects.Out("brig", "get-user-by-handle", benchTarget)
			if err != nil {
				b.Fatal(err)
			}
			body := bytes.Repeat([]byte("x"), size)
			ev := bus.Event{ID: bus.NewID(), Source: "/brig", Type: contract.TypeRequest, TimeoutMs: 10000, Data: body}
			req := ev.Message(subject)
			req.Reply = "_INBOX.bench.reply"
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				// What the Loop does for each request: decode, handle,
				// publish the reply.
				ev, err := bus.Decode(req)
				if err != nil {
					b.Fatal(err)
				}
				if err := nc.PublishMsg(f.handle(ctx, subject, ev).Message(req.Reply)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRemotePost is remoteClient.post alone: building the HTTP
// request with the contract's headers and reading the response.
func BenchmarkRemotePost(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(benchSizeName(size), func(b *testing.B) {
			f, _ := benchFederator(b, size)
			target := discovery.Target{Host: benchInfraB, Port: 443}
			route := contract.Route{Component: "brig", RPC: "get-user-by-handle", Domain: benchTarget}
			ev := bus.Event{ID: bus.NewID(), Source: "/brig", Type: contract.TypeRequest, Data: bytes.Repeat([]byte("x"), size)}
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for b.Loop() {
				resp, err := f.client.post(ctx, target, route, ev)
				if err != nil || len(resp.body) != size {
					b.Fatalf("post: %v, %v", resp, err)
				}
			}
		})
	}
}

// BenchmarkFederatorHandleMetrics is BenchmarkFederatorHandle/256B with
// the metrics of a process recorded (target domain listed): the cost of
// the metrics on the request path, against BenchmarkFederatorHandle/256B
// in the same run.
func BenchmarkFederatorHandleMetrics(b *testing.B) {
	f, nc := benchFederator(b, 256)
	m := metrics.New([]string{"brig"})
	m.SetListed(func(d string) bool { return d == benchTarget })
	f.metrics, f.client.metrics = m, m
	subject, err := f.subjects.Out("brig", "get-user-by-handle", benchTarget)
	if err != nil {
		b.Fatal(err)
	}
	ev := bus.Event{ID: bus.NewID(), Source: "/brig", Type: contract.TypeRequest, TimeoutMs: 10000, Data: bytes.Repeat([]byte("x"), 256)}
	req := ev.Message(subject)
	req.Reply = "_INBOX.bench.reply"
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		ev, err := bus.Decode(req)
		if err != nil {
			b.Fatal(err)
		}
		if err := nc.PublishMsg(f.handle(ctx, subject, ev).Message(req.Reply)); err != nil {
			b.Fatal(err)
		}
	}
}
