package tracing

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name, tp string
		ok       bool
	}{
		{"valid sampled", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"valid not sampled", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
		{"later version with more fields", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", true},
		{"version 00 with more fields", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false},
		{"version ff", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"zero span id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
		{"upper case", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},
		{"short", "00-4bf92f35", false},
		{"not hex", "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01", false},
		{"empty", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sc, ok := Parse(tc.tp)
			if ok != tc.ok {
				t.Fatalf("Parse(%q) ok = %v, want %v", tc.tp, ok, tc.ok)
			}
			if ok && Format(sc)[2:] != tc.tp[2:55] { // sent on as version 00
				t.Errorf("Format(Parse(%q)) = %q", tc.tp, Format(sc))
			}
		})
	}
}

func FuzzParseTraceParent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
	f.Add("")
	f.Fuzz(func(t *testing.T, tp string) {
		sc, ok := Parse(tp)
		if !ok {
			return
		}
		again, ok := Parse(Format(sc))
		if !ok || again.TraceID() != sc.TraceID() || again.SpanID() != sc.SpanID() || again.TraceFlags() != sc.TraceFlags() {
			t.Fatalf("Parse(Format(Parse(%q))) differs", tp)
		}
	})
}

// TestOffCostsNothing: with tracing off, Start makes no span and
// TraceParent passes the incoming one on.
func TestOffCostsNothing(t *testing.T) {
	Enable(nil)
	const in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx, span := Start(context.Background(), "x", trace.SpanKindServer, in)
	if span.Recording() || TraceParent(ctx, in) != in {
		t.Fatal("a span was made with tracing off")
	}
	if n := testing.AllocsPerRun(100, func() {
		ctx, span := Start(context.Background(), "x", trace.SpanKindServer, in)
		_ = TraceParent(ctx, in)
		span.End(nil, "")
	}); n != 0 {
		t.Errorf("%v allocations per hop with tracing off, want 0", n)
	}
}

// TestContinuesTheCaller: a span started from a traceparent is its child.
func TestContinuesTheCaller(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	Enable(tp)
	t.Cleanup(func() { Enable(nil) })
	const in = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx, span := Start(context.Background(), "child", trace.SpanKindServer, in)
	out := TraceParent(ctx, in)
	span.End(nil, "")
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Parent.SpanID().String() != "00f067aa0ba902b7" || spans[0].SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("spans: %+v", spans)
	}
	if out == in || TraceID(out) != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("traceparent sent on: %s", out)
	}
}
