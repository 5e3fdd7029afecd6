package contract_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fedbus/fedbus/contract"
)

// newSubjects returns the subjects of prefix, failing the test on error.
func newSubjects(tb testing.TB, prefix string) contract.Subjects {
	tb.Helper()
	s, err := contract.NewSubjects(prefix)
	if err != nil {
		tb.Fatalf("NewSubjects(%q): %v", prefix, err)
	}
	return s
}

func TestNewSubjects(t *testing.T) {
	good := []struct {
		name, prefix, out, in string
	}{
		{"default", contract.DefaultPrefix, "fed.out.>", "fed.in.brig.>"},
		{"two tokens", "prod.fed", "prod.fed.out.>", "prod.fed.in.brig.>"},
		{"mixed case and underscore", "Fed_1-x", "Fed_1-x.out.>", "Fed_1-x.in.brig.>"},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			s := newSubjects(t, tc.prefix)
			if s.Prefix() != tc.prefix {
				t.Errorf("Prefix() = %q, want %q", s.Prefix(), tc.prefix)
			}
			if got := s.OutAll(); got != tc.out {
				t.Errorf("OutAll() = %q, want %q", got, tc.out)
			}
			got, err := s.InComponent("brig")
			if err != nil || got != tc.in {
				t.Errorf("InComponent(brig) = %q, %v; want %q", got, err, tc.in)
			}
		})
	}

	bad := []struct{ name, prefix string }{
		{"empty", ""},
		{"lone dot", "."},
		{"trailing dot", "fed."},
		{"leading dot", ".fed"},
		{"double dot", "a..fed"},
		{"star", "*"},
		{"star token", "fed.*"},
		{"gt", ">"},
		{"gt token", "fed.>"},
		{"space", "fe d"},
		{"tab", "fed\t"},
		{"unicode", "féd"},
		{"129-char token", strings.Repeat("f", 129)},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if s, err := contract.NewSubjects(tc.prefix); err == nil {
				t.Errorf("NewSubjects(%q) = %+v, want an error", tc.prefix, s)
			}
		})
	}
}

func TestSubjectsBuild(t *testing.T) {
	s := newSubjects(t, "fed")
	tests := []struct {
		name                   string
		component, rpc, domain string
		out, in                string
	}{
		{"seed example", "brig", "get-user-by-handle", "b.example.com",
			"fed.out.brig.get-user-by-handle.b.example.com", "fed.in.brig.get-user-by-handle.b.example.com"},
		{"upper-case domain lower-cased", "galley", "on_conversation_updated", "B.Example.COM",
			"fed.out.galley.on_conversation_updated.b.example.com", "fed.in.galley.on_conversation_updated.b.example.com"},
		{"IDNA domain", "cargohold", "getAsset", "bücher.example",
			"fed.out.cargohold.getAsset.xn--bcher-kva.example", "fed.in.cargohold.getAsset.xn--bcher-kva.example"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := s.Out(tc.component, tc.rpc, tc.domain)
			if err != nil || out != tc.out {
				t.Errorf("Out = %q, %v; want %q", out, err, tc.out)
			}
			in, err := s.In(tc.component, tc.rpc, tc.domain)
			if err != nil || in != tc.in {
				t.Errorf("In = %q, %v; want %q", in, err, tc.in)
			}
		})
	}
}

func TestSubjectsBuildRefused(t *testing.T) {
	s := newSubjects(t, "fed")
	tests := []struct {
		name                   string
		component, rpc, domain string
		want                   error
	}{
		{"star component", "*", "rpc", "b.example.com", contract.ErrInvalidEndpoint},
		{"gt component", ">", "rpc", "b.example.com", contract.ErrInvalidEndpoint},
		{"upper-case component", "Brig", "rpc", "b.example.com", contract.ErrInvalidEndpoint},
		{"empty component", "", "rpc", "b.example.com", contract.ErrInvalidEndpoint},
		{"dotted component", "brig.x", "rpc", "b.example.com", contract.ErrInvalidEndpoint},
		{"star rpc", "brig", "*", "b.example.com", contract.ErrInvalidEndpoint},
		{"gt rpc", "brig", ">", "b.example.com", contract.ErrInvalidEndpoint},
		{"space rpc", "brig", "get user", "b.example.com", contract.ErrInvalidEndpoint},
		{"dotted rpc", "brig", "get.user", "b.example.com", contract.ErrInvalidEndpoint},
		{"empty rpc", "brig", "", "b.example.com", contract.ErrInvalidEndpoint},
		{"star domain", "brig", "rpc", "*.example.com", contract.ErrDomainParseError},
		{"gt domain", "brig", "rpc", ">", contract.ErrDomainParseError},
		{"space domain", "brig", "rpc", "b example.com", contract.ErrDomainParseError},
		{"double dot domain", "brig", "rpc", "b..example.com", contract.ErrDomainParseError},
		{"trailing dot domain", "brig", "rpc", "b.example.com.", contract.ErrDomainParseError},
		{"empty domain", "brig", "rpc", "", contract.ErrDomainParseError},
		{"300-char domain", "brig", "rpc", domainOfLen(t, 300), contract.ErrDomainParseError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for dir, build := range map[string]func(c, r, d string) (string, error){"Out": s.Out, "In": s.In} {
				got, err := build(tc.component, tc.rpc, tc.domain)
				if !errors.Is(err, tc.want) {
					t.Errorf("%s(%q, %q, %q) = %q, %v; want %v", dir, tc.component, tc.rpc, tc.domain, got, err, tc.want)
				}
				if got != "" {
					t.Errorf("%s returned subject %q with an error", dir, got)
				}
			}
		})
	}
	t.Run("InComponent refuses bad component", func(t *testing.T) {
		for _, c := range []string{"", "*", ">", "Brig", "br ig", "brig.x"} {
			if got, err := s.InComponent(c); !errors.Is(err, contract.ErrInvalidEndpoint) {
				t.Errorf("InComponent(%q) = %q, %v; want invalid-endpoint", c, got, err)
			}
		}
	})
}

func TestParseRoundTrip(t *testing.T) {
	for _, prefix := range []string{"fed", "prod.fed"} {
		s := newSubjects(t, prefix)
		routes := []contract.Route{
			{Component: "brig", RPC: "get-user-by-handle", Domain: "b.example.com"},
			{Component: "galley", RPC: "on_conversation_updated", Domain: "xn--bcher-kva.example"},
			{Component: strings.Repeat("c", 63), RPC: strings.Repeat("R", 128), Domain: domainOfLen(t, 253)},
		}
		for _, r := range routes {
			t.Run(prefix+"/"+r.Component[:min(len(r.Component), 10)], func(t *testing.T) {
				out, err := s.Out(r.Component, r.RPC, r.Domain)
				if err != nil {
					t.Fatalf("Out: %v", err)
				}
				got, err := s.ParseOut(out)
				if err != nil || got != r {
					t.Errorf("ParseOut(%q) = %+v, %v; want %+v", out, got, err, r)
				}
				if _, err := s.ParseIn(out); !errors.Is(err, contract.ErrInvalidEndpoint) {
					t.Errorf("ParseIn(%q) accepted an outbound subject: %v", out, err)
				}
				in, err := s.In(r.Component, r.RPC, r.Domain)
				if err != nil {
					t.Fatalf("In: %v", err)
				}
				got, err = s.ParseIn(in)
				if err != nil || got != r {
					t.Errorf("ParseIn(%q) = %+v, %v; want %+v", in, got, err, r)
				}
				if _, err := s.ParseOut(in); !errors.Is(err, contract.ErrInvalidEndpoint) {
					t.Errorf("ParseOut(%q) accepted an inbound subject: %v", in, err)
				}
			})
		}
	}
	t.Run("upper-case domain parses canonical", func(t *testing.T) {
		s := newSubjects(t, "fed")
		got, err := s.ParseOut("fed.out.brig.rpc.B.Example.COM")
		want := contract.Route{Component: "brig", RPC: "rpc", Domain: "b.example.com"}
		if err != nil || got != want {
			t.Errorf("ParseOut = %+v, %v; want %+v", got, err, want)
		}
	})
}

func TestParseOutRefused(t *testing.T) {
	s := newSubjects(t, "fed")
	tests := []struct {
		name    string
		subject string
		want    error
	}{
		{"no domain", "fed.out.brig.rpc", contract.ErrInvalidEndpoint},
		{"no rpc", "fed.out.brig", contract.ErrInvalidEndpoint},
		{"prefix only", "fed.out.", contract.ErrInvalidEndpoint},
		{"empty", "", contract.ErrInvalidEndpoint},
		{"star component", "fed.out.*.rpc.b.example.com", contract.ErrInvalidEndpoint},
		{"gt after component", "fed.out.brig.>", contract.ErrInvalidEndpoint},
		{"gt rpc", "fed.out.brig.>.b.example.com", contract.ErrInvalidEndpoint},
		{"star rpc", "fed.out.brig.*.b.example.com", contract.ErrInvalidEndpoint},
		{"gt domain", "fed.out.brig.rpc.>", contract.ErrDomainParseError},
		{"star domain label", "fed.out.brig.rpc.*.example.com", contract.ErrDomainParseError},
		{"empty domain label", "fed.out.brig.r.b..example.com", contract.ErrDomainParseError},
		{"trailing dot", "fed.out.brig.r.b.example.com.", contract.ErrDomainParseError},
		{"single-label domain", "fed.out.brig.r.localhost", contract.ErrDomainParseError},
		{"empty component", "fed.out..rpc.b.example.com", contract.ErrInvalidEndpoint},
		{"empty rpc", "fed.out.brig..b.example.com", contract.ErrInvalidEndpoint},
		{"inbound subject", "fed.in.brig.rpc.b.example.com", contract.ErrInvalidEndpoint},
		{"inbound empty tokens", "fed.in...", contract.ErrInvalidEndpoint},
		{"other prefix", "xfed.out.brig.rpc.b.example.com", contract.ErrInvalidEndpoint},
		{"upper-case prefix", "FED.out.brig.rpc.b.example.com", contract.ErrInvalidEndpoint},
		{"upper-case component", "fed.out.Brig.rpc.b.example.com", contract.ErrInvalidEndpoint},
		{"space in rpc", "fed.out.brig.r c.b.example.com", contract.ErrInvalidEndpoint},
		{"300-char domain", "fed.out.brig.rpc." + domainOfLen(t, 300), contract.ErrDomainParseError},
		{"64-char label", "fed.out.brig.rpc." + strings.Repeat("a", 64) + ".example", contract.ErrDomainParseError},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.ParseOut(tc.subject)
			if !errors.Is(err, tc.want) {
				t.Errorf("ParseOut(%q) = %+v, %v; want %v", tc.subject, got, err, tc.want)
			}
			if got != (contract.Route{}) {
				t.Errorf("ParseOut(%q) returned route %+v with an error", tc.subject, got)
			}
			// The same subject under the inbound prefix is refused the same way.
			if in, ok := strings.CutPrefix(tc.subject, "fed.out."); ok {
				if _, err := s.ParseIn("fed.in." + in); !errors.Is(err, tc.want) {
					t.Errorf("ParseIn(fed.in.%s) error %v, want %v", in, err, tc.want)
				}
			}
		})
	}
}
