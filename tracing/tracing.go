// Package tracing is fedbus's OpenTelemetry tracing: one trace follows a
// federated call across both backends (component A → NATS → federator A →
// HTTPS → ingress B → NATS → component B), carried by the W3C traceparent
// header over HTTP and the CloudEvents extension ce-traceparent over NATS.
//
// Tracing is off by default and then costs nothing but an atomic load per
// hop: spans are made only once Setup found an exporter in the standard
// OTEL_* variables, or a program (a test, a component) called Enable. With
// tracing off, fedbus still passes an incoming traceparent on unchanged, so
// that traced components at both ends stay in one trace.
//
// Span names: "fedbus.call <component>.<rpc>" (a component's bus.Client
// call, client), "federator <component>.<rpc>" (the federator's handling,
// server), "POST /federation/<component>/<rpc>" (the federator's HTTPS
// request, client), "ingress <component>.<rpc>" (the remote ingress,
// server), "fedbus.publish <component>.<rpc>" (the ingress's NATS request
// to its component, client) and "fedbus.handle <component>.<rpc>" (the
// component's bus.Server handler, server).
package tracing

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.39.0"
	"go.opentelemetry.io/otel/trace"
)

// Name is the instrumentation scope of fedbus's spans.
const Name = "github.com/fedbus/fedbus"

// Attribute keys of fedbus's spans.
const (
	AttrComponent = attribute.Key("fedbus.component")
	AttrRPC       = attribute.Key("fedbus.rpc")
	AttrDomain    = attribute.Key("fedbus.domain") // the remote: target (outbound) or origin (inbound)
	AttrRequestID = attribute.Key("fedbus.request_id")
	AttrLabel     = attribute.Key("fedbus.error.label")
)

var tracer atomic.Pointer[trace.Tracer]

// Enable makes fedbus record spans with tp (nil turns tracing off again).
func Enable(tp trace.TracerProvider) {
	if tp == nil {
		tracer.Store(nil)
		return
	}
	t := tp.Tracer(Name)
	tracer.Store(&t)
}

// On reports whether spans are recorded.
func On() bool { return tracer.Load() != nil }

// ErrUnsupportedExporter is returned by Setup for an OTEL_TRACES_EXPORTER
// or OTEL_EXPORTER_OTLP_PROTOCOL that fedbus does not provide.
var ErrUnsupportedExporter = errors.New("unsupported trace exporter")

// Setup turns tracing on when the environment asks for it, with the
// standard variables of OpenTelemetry: OTEL_TRACES_EXPORTER=otlp, or an
// OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, export
// spans with OTLP over HTTP (protobuf) to that endpoint (headers, timeout,
// TLS and sampling by OTEL_EXPORTER_OTLP_* and OTEL_TRACES_SAMPLER*, as
// the OpenTelemetry SDK reads them); OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none keep it off. service names the process
// (OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override it). It returns
// the function that flushes and stops the exporter, and whether tracing
// is on.
func Setup(ctx context.Context, service string, attrs ...attribute.KeyValue) (stop func(context.Context) error, on bool, err error) {
	noop := func(context.Context) error { return nil }
	if !wanted() {
		return noop, false, nil
	}
	if p := firstEnv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"); p != "" && p != "http/protobuf" {
		return noop, false, fmt.Errorf("tracing: OTEL_EXPORTER_OTLP_PROTOCOL %q: %w (fedbus exports http/protobuf)", p, ErrUnsupportedExporter)
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return noop, false, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(append(attrs, semconv.ServiceName(service))...))
	if err != nil {
		return noop, false, fmt.Errorf("tracing: resource: %w", err)
	}
	// The environment's resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) wins.
	if env, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, env); err == nil {
			res = merged
		}
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	Enable(tp)
	return func(ctx context.Context) error {
		Enable(nil)
		return tp.Shutdown(ctx)
	}, true, nil
}

// wanted reports whether the OTEL_* variables ask for trace export.
func wanted() bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch exp := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); exp {
	case "none":
		return false
	case "otlp":
		return true
	}
	return firstEnv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT") != ""
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := strings.TrimSpace(os.Getenv(n)); v != "" {
			return v
		}
	}
	return ""
}

// Span is a span of fedbus, or nothing when tracing is off (every method
// of the zero Span does nothing).
type Span struct {
	s trace.Span
}

// Start starts a span named name of kind, child of the span of ctx, or
// else of the W3C traceparent parent (the caller's, from a header). With
// tracing off it returns ctx and the zero Span.
func Start(ctx context.Context, name string, kind trace.SpanKind, parent string, attrs ...attribute.KeyValue) (context.Context, Span) {
	t := tracer.Load()
	if t == nil {
		return ctx, Span{}
	}
	if !trace.SpanContextFromContext(ctx).IsValid() {
		if sc, ok := Parse(parent); ok {
			ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
		}
	}
	ctx, s := (*t).Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
	return ctx, Span{s: s}
}

// End ends the span; a non-nil err marks it failed, with label (the
// contract label) as an attribute when not empty.
func (s Span) End(err error, label string) {
	if s.s == nil {
		return
	}
	if err != nil {
		s.s.SetStatus(codes.Error, err.Error())
		if label != "" {
			s.s.SetAttributes(AttrLabel.String(label))
		}
	}
	s.s.End()
}

// SetAttributes adds attributes to the span.
func (s Span) SetAttributes(attrs ...attribute.KeyValue) {
	if s.s != nil {
		s.s.SetAttributes(attrs...)
	}
}

// SetName renames the span (once its subject is known).
func (s Span) SetName(name string) {
	if s.s != nil {
		s.s.SetName(name)
	}
}

// Recording reports whether the span records.
func (s Span) Recording() bool { return s.s != nil && s.s.IsRecording() }

// TraceParent returns the traceparent to send onwards: that of the span
// of ctx when there is one, else fallback (the incoming one, passed on
// unchanged).
func TraceParent(ctx context.Context, fallback string) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return fallback
	}
	return Format(sc)
}

// Format returns the W3C traceparent of sc (version 00).
func Format(sc trace.SpanContext) string {
	tid, sid := sc.TraceID(), sc.SpanID()
	var b [55]byte
	copy(b[:], "00-")
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{byte(sc.TraceFlags())})
	return string(b[:])
}

// Parse reads a W3C traceparent (version 00, or a later version's first
// four fields): the remote span context and whether it is valid.
func Parse(tp string) (trace.SpanContext, bool) {
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' || (len(tp) > 55 && tp[55] != '-') {
		return trace.SpanContext{}, false
	}
	ver, err := hex.DecodeString(tp[:2])
	if err != nil || ver[0] == 0xff || ver[0] == 0 && len(tp) != 55 {
		return trace.SpanContext{}, false
	}
	var tid trace.TraceID
	var sid trace.SpanID
	var flags [1]byte
	if _, err := hex.Decode(tid[:], []byte(tp[3:35])); err != nil {
		return trace.SpanContext{}, false
	}
	if _, err := hex.Decode(sid[:], []byte(tp[36:52])); err != nil {
		return trace.SpanContext{}, false
	}
	if _, err := hex.Decode(flags[:], []byte(tp[53:55])); err != nil {
		return trace.SpanContext{}, false
	}
	if strings.ToLower(tp[:55]) != tp[:55] { // the format is lower-case hex
		return trace.SpanContext{}, false
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.TraceFlags(flags[0]), Remote: true})
	return sc, sc.IsValid()
}

// TraceID returns the trace id of a traceparent ("" when invalid).
func TraceID(tp string) string {
	sc, ok := Parse(tp)
	if !ok {
		return ""
	}
	return sc.TraceID().String()
}
