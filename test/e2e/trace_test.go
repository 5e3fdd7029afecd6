package e2e

import (
	"context"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/fedbus/fedbus/tracing"
)

// TestOneTraceAcrossBothBackends: one federated call from a component of
// A to a component of B is one trace of six spans, each the child of the
// one before: the component's call, the federator of A, its HTTPS request,
// the ingress of B, its NATS request, the component of B.
func TestOneTraceAcrossBothBackends(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tracing.Enable(tp)
	t.Cleanup(func() {
		tracing.Enable(nil)
		_ = tp.Shutdown(context.Background())
	})
	w := newWorld(t)
	serve(t, w.b, "brig", component)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := w.a.Client("/brig").Call(ctx, domainB, "brig", "echo", []byte(`"hello"`)); err != nil {
		t.Fatal(err)
	}

	want := []struct {
		name string
		kind trace.SpanKind
	}{
		{"fedbus.call brig.echo", trace.SpanKindClient},
		{"federator brig.echo", trace.SpanKindServer},
		{"POST /federation/brig/echo", trace.SpanKindClient},
		{"ingress brig.echo", trace.SpanKindServer},
		{"fedbus.publish brig.echo", trace.SpanKindClient},
		{"fedbus.handle brig.echo", trace.SpanKindServer},
	}
	var spans tracetest.SpanStubs
	waitFor(t, 5*time.Second, "the six spans of the call", func() bool {
		spans = exp.GetSpans()
		return len(spans) >= len(want)
	})
	byName := map[string]tracetest.SpanStub{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	root, ok := byName[want[0].name]
	if !ok {
		t.Fatalf("no span %q among %d spans", want[0].name, len(spans))
	}
	if root.Parent.IsValid() {
		t.Errorf("the component's call has a parent: %v", root.Parent.SpanID())
	}
	traceID := root.SpanContext.TraceID()
	parent := root.SpanContext
	for i, w := range want {
		s, ok := byName[w.name]
		if !ok {
			t.Fatalf("span %d %q missing; spans: %v", i, w.name, names(spans))
		}
		if s.SpanKind != w.kind {
			t.Errorf("span %q: kind %v, want %v", w.name, s.SpanKind, w.kind)
		}
		if s.SpanContext.TraceID() != traceID {
			t.Errorf("span %q is in trace %s, want %s", w.name, s.SpanContext.TraceID(), traceID)
		}
		if i > 0 && s.Parent.SpanID() != parent.SpanID() {
			t.Errorf("span %q: parent %s, want %q (%s)", w.name, s.Parent.SpanID(), want[i-1].name, parent.SpanID())
		}
		parent = s.SpanContext
	}
	if len(spans) != len(want) {
		t.Errorf("%d spans, want %d: %v", len(spans), len(want), names(spans))
	}
}

func names(spans tracetest.SpanStubs) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name
	}
	return out
}
