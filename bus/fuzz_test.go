package bus_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/fedbus/fedbus/bus"
	"github.com/nats-io/nats.go"
)

// Seed corpora live in testdata/fuzz/<Name>/; f.Add adds a few more inline.

func FuzzParseOut(f *testing.F) {
	for _, s := range []string{
		"fed.out.brig.get-user-by-handle.b.example.com",
		"fed.out.brig.rpc",
		"fed.out.*.rpc.b.example.com",
		"fed.out.brig.>",
	} {
		f.Add(s)
	}
	subjects, err := bus.NewSubjects(bus.DefaultPrefix)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		r, err := subjects.ParseOut(subject)
		if err != nil {
			if !errors.Is(err, bus.ErrInvalidEndpoint) && !errors.Is(err, bus.ErrDomainParseError) {
				t.Fatalf("ParseOut(%q) error %v: not invalid-endpoint or domain-parse-error", subject, err)
			}
			if r != (bus.Route{}) {
				t.Fatalf("ParseOut(%q) returned %+v with an error", subject, r)
			}
			return
		}
		if !bus.ValidComponent(r.Component) || !bus.ValidRPC(r.RPC) {
			t.Fatalf("ParseOut(%q) = %+v: invalid component or rpc", subject, r)
		}
		if d, err := bus.NormalizeDomain(r.Domain); err != nil || d != r.Domain {
			t.Fatalf("ParseOut(%q) domain %q is not canonical: %q, %v", subject, r.Domain, d, err)
		}
		out, err := subjects.Out(r.Component, r.RPC, r.Domain)
		if err != nil {
			t.Fatalf("Out(%+v): %v", r, err)
		}
		for _, tok := range strings.Split(out, ".") {
			if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
				t.Fatalf("rebuilt subject %q has token %q", out, tok)
			}
		}
		// The subject is prefix, component, rpc, then a domain that
		// normalises to r.Domain; when that domain was already canonical
		// the subject rebuilds to itself.
		head := "fed.out." + r.Component + "." + r.RPC + "."
		raw, ok := strings.CutPrefix(subject, head)
		if !ok {
			t.Fatalf("ParseOut(%q) = %+v: subject does not start with %q", subject, r, head)
		}
		if d, err := bus.NormalizeDomain(raw); err != nil || d != r.Domain {
			t.Fatalf("domain %q of %q normalises to %q, %v; ParseOut said %q", raw, subject, d, err, r.Domain)
		}
		if raw == r.Domain && out != subject {
			t.Fatalf("canonical subject %q rebuilt as %q", subject, out)
		}
		if again, err := subjects.ParseOut(out); err != nil || again != r {
			t.Fatalf("ParseOut(%q) = %+v, %v; want %+v", out, again, err, r)
		}
	})
}

// headerFromString builds NATS headers from lines "key: value" (keys kept
// as they are: NATS headers are case-sensitive).
func headerFromString(s string) nats.Header {
	h := nats.Header{}
	for line := range strings.SplitSeq(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	return h
}

func FuzzDecode(f *testing.F) {
	f.Add("ce-specversion: 1.0\nce-id: 1\nce-source: /brig\nce-type: fedbus.request", []byte(`{"a":1}`))
	f.Add("content-type: application/cloudevents+json",
		[]byte(`{"specversion":"1.0","id":"1","source":"/brig","type":"fedbus.request","data":{"a":1}}`))
	f.Fuzz(func(t *testing.T, headers string, body []byte) {
		msg := &nats.Msg{Subject: "fed.out.brig.rpc.b.example.com", Header: headerFromString(headers), Data: body}
		ev, err := bus.Decode(msg)
		if err != nil {
			if !errors.Is(err, bus.ErrInvalidRequest) {
				t.Fatalf("Decode error %v is not invalid-request", err)
			}
			return
		}
		if ev.ID == "" || ev.Source == "" || ev.Type == "" {
			t.Fatalf("Decode = %+v: a required attribute is empty", ev)
		}
		if ev.TimeoutMs < 0 {
			t.Fatalf("Decode = %+v: negative timeout", ev)
		}
		if ev.Structured != bus.WantsStructured(msg) {
			t.Fatalf("Decode Structured = %v, WantsStructured = %v", ev.Structured, !ev.Structured)
		}
		// Re-encoding in either mode decodes to the same event.
		for _, structured := range []bool{false, true} {
			in := ev
			in.Structured = structured
			back, err := bus.Decode(in.Message("_INBOX.x"))
			if err != nil {
				t.Fatalf("re-encoded %+v (structured %v) does not decode: %v", in, structured, err)
			}
			want := in.Data
			if structured {
				// JSON data is embedded in the structured event as JSON:
				// insignificant white space after the value is not kept.
				want = bytes.TrimRight(want, " \t\r\n")
				back.Data = bytes.TrimRight(back.Data, " \t\r\n")
			}
			if back.ID != in.ID || back.Type != in.Type || back.TraceParent != in.TraceParent ||
				back.OriginDomain != in.OriginDomain || back.TimeoutMs != in.TimeoutMs ||
				back.Structured != structured || !bytes.Equal(back.Data, want) {
				t.Fatalf("re-encoded (structured %v)\n%+v decodes to\n%+v", structured, in, back)
			}
		}
	})
}

func FuzzNormalizeDomain(f *testing.F) {
	for _, s := range []string{"b.example.com", "B.Example.COM", "bücher.example", "b..example.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := bus.NormalizeDomain(s)
		if err != nil {
			var e *bus.Error
			if !errors.As(err, &e) || e.Label != bus.LabelDomainParseError || e.Code != 403 {
				t.Fatalf("NormalizeDomain(%q) error %#v is not domain-parse-error", s, err)
			}
			if out != "" {
				t.Fatalf("NormalizeDomain(%q) = %q with an error", s, out)
			}
			return
		}
		if len(out) > 253 {
			t.Fatalf("NormalizeDomain(%q) = %q: %d characters", s, out, len(out))
		}
		for i := 0; i < len(out); i++ {
			c := out[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
				t.Fatalf("NormalizeDomain(%q) = %q: character %q", s, out, c)
			}
		}
		labels := strings.Split(out, ".")
		if len(labels) < 2 {
			t.Fatalf("NormalizeDomain(%q) = %q: one label", s, out)
		}
		for _, l := range labels {
			if l == "" || len(l) > 63 {
				t.Fatalf("NormalizeDomain(%q) = %q: label %q", s, out, l)
			}
		}
		if again, err := bus.NormalizeDomain(out); err != nil || again != out {
			t.Fatalf("NormalizeDomain(%q) = %q, %v; not idempotent", out, again, err)
		}
		if isASCII(s) {
			// ASCII input: only the case changes.
			if !strings.EqualFold(s, out) {
				t.Fatalf("NormalizeDomain(%q) = %q: not a case change", s, out)
			}
			if up, err := bus.NormalizeDomain(strings.ToUpper(s)); err != nil || up != out {
				t.Fatalf("NormalizeDomain(%q) = %q, %v; want %q", strings.ToUpper(s), up, err, out)
			}
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
