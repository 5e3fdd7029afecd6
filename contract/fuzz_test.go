package contract_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/fedbus/fedbus/contract"
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
	subjects, err := contract.NewSubjects(contract.DefaultPrefix)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		r, err := subjects.ParseOut(subject)
		if err != nil {
			if !errors.Is(err, contract.ErrInvalidEndpoint) && !errors.Is(err, contract.ErrDomainParseError) {
				t.Fatalf("ParseOut(%q) error %v: not invalid-endpoint or domain-parse-error", subject, err)
			}
			if r != (contract.Route{}) {
				t.Fatalf("ParseOut(%q) returned %+v with an error", subject, r)
			}
			return
		}
		if !contract.ValidComponent(r.Component) || !contract.ValidRPC(r.RPC) {
			t.Fatalf("ParseOut(%q) = %+v: invalid component or rpc", subject, r)
		}
		if d, err := contract.NormalizeDomain(r.Domain); err != nil || d != r.Domain {
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
		if d, err := contract.NormalizeDomain(raw); err != nil || d != r.Domain {
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

func FuzzNormalizeDomain(f *testing.F) {
	for _, s := range []string{"b.example.com", "B.Example.COM", "bücher.example", "b..example.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := contract.NormalizeDomain(s)
		if err != nil {
			var e *contract.Error
			if !errors.As(err, &e) || e.Label != contract.LabelDomainParseError || e.Code != 403 {
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
		if again, err := contract.NormalizeDomain(out); err != nil || again != out {
			t.Fatalf("NormalizeDomain(%q) = %q, %v; not idempotent", out, again, err)
		}
		if isASCII(s) {
			// ASCII input: only the case changes.
			if !strings.EqualFold(s, out) {
				t.Fatalf("NormalizeDomain(%q) = %q: not a case change", s, out)
			}
			if up, err := contract.NormalizeDomain(strings.ToUpper(s)); err != nil || up != out {
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

// FuzzParsePath checks the path parser: whatever it accepts is exactly
// /federation/<component>/<rpc> with tokens that make a valid subject;
// whatever it refuses is invalid-endpoint or unknown-component.
func FuzzParsePath(f *testing.F) {
	components := map[string]struct{}{"brig": {}, "galley": {}}
	subjects, err := contract.NewSubjects("fed")
	if err != nil {
		f.Fatal(err)
	}
	for _, p := range []string{
		"/federation/brig/get-user", "/federation/brig/a%2Fb", "/federation/brig/../x",
		"/federation/BRIG/x", "/federation/brig/x/y", "/federation/brig/x/", "/federation/gundeck/x",
		"/federation/brig/*", "/federation/brig/>", "/federation/brig/a b", "//federation/brig/x", "",
	} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		component, rpc, e := contract.ParsePath(path, func(c string) bool { _, ok := components[c]; return ok })
		if e != nil {
			if e.Code != http.StatusForbidden || (e.Label != contract.LabelInvalidEndpoint && e.Label != contract.LabelUnknownComponent) {
				t.Fatalf("refusal %+v", e)
			}
			return
		}
		if path != "/federation/"+component+"/"+rpc {
			t.Fatalf("accepted %q as %q/%q", path, component, rpc)
		}
		if _, ok := components[component]; !ok {
			t.Fatalf("accepted unknown component %q", component)
		}
		subject, err := subjects.In(component, rpc, "a.example.com")
		if err != nil {
			t.Fatalf("accepted %q, but no subject: %v", path, err)
		}
		if strings.ContainsAny(subject, "*> \t\r\n") || strings.Count(subject, ".") != 6 {
			t.Fatalf("subject %q", subject)
		}
	})
}
