package bus_test

import (
	"testing"

	"github.com/fedbus/fedbus/bus"
)

var (
	benchRoute bus.Route
	benchStr   string
	benchEvent bus.Event
)

func BenchmarkParseOut(b *testing.B) {
	subjects := newSubjects(b, bus.DefaultPrefix)
	for _, bc := range []struct{ name, subject string }{
		{"canonical", "fed.out.brig.get-user-by-handle.b.example.com"},
		{"upper-case", "fed.out.brig.get-user-by-handle.B.Example.COM"},
		{"idna", "fed.out.brig.get-user-by-handle.bücher.example"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r, err := subjects.ParseOut(bc.subject)
				if err != nil {
					b.Fatal(err)
				}
				benchRoute = r
			}
		})
	}
}

func BenchmarkNormalizeDomain(b *testing.B) {
	for _, bc := range []struct{ name, domain string }{
		{"canonical", "b.example.com"},
		{"upper-case", "B.Example.COM"},
		{"idna", "bücher.example"},
		{"253-chars", domainOfLen(b, 253)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				d, err := bus.NormalizeDomain(bc.domain)
				if err != nil {
					b.Fatal(err)
				}
				benchStr = d
			}
		})
	}
}

func benchRequest() bus.Event {
	return bus.Event{
		ID: "2bCjq5Ws1yDkaNU3x5Pbe7", Source: "/brig", Type: bus.TypeRequest,
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
