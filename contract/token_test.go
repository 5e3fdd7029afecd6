package contract_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fedbus/fedbus/contract"
)

// domainOfLen returns a valid domain of exactly n characters (n >= 3) made of
// labels of at most 63 characters.
func domainOfLen(tb testing.TB, n int) string {
	tb.Helper()
	if n < 3 {
		tb.Fatalf("domainOfLen(%d): need at least 3 characters", n)
	}
	var labels []string
	left := n
	for left > 0 {
		l := min(63, left)
		// Leave room for at least one more label of one character and the
		// dot before it when this label would not end the domain.
		if left-l == 1 {
			l--
		}
		labels = append(labels, strings.Repeat(string(rune('a'+len(labels)%26)), l))
		left -= l
		if left > 0 {
			left-- // the dot
		}
	}
	d := strings.Join(labels, ".")
	if len(d) != n {
		tb.Fatalf("domainOfLen(%d) built %d characters", n, len(d))
	}
	return d
}

func TestValidComponent(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"brig", "brig", true},
		{"with hyphen and digits", "cargo-hold2", true},
		{"single char", "a", true},
		{"63 chars", strings.Repeat("a", 63), true},
		{"64 chars", strings.Repeat("a", 64), false},
		{"empty", "", false},
		{"upper case", "Brig", false},
		{"all upper case", "BRIG", false},
		{"underscore", "brig_x", false},
		{"star", "*", false},
		{"gt", ">", false},
		{"star inside", "br*g", false},
		{"space", "br ig", false},
		{"leading space", " brig", false},
		{"tab", "brig\t", false},
		{"dot", "brig.x", false},
		{"lone dot", ".", false},
		{"unicode", "brîg", false},
		{"nul", "brig\x00", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := contract.ValidComponent(tc.in); got != tc.want {
				t.Errorf("ValidComponent(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestValidRPC(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"kebab", "get-user-by-handle", true},
		{"camel", "getUserByHandle", true},
		{"snake and digits", "on_user_deleted_2", true},
		{"single char", "x", true},
		{"128 chars", strings.Repeat("R", 128), true},
		{"129 chars", strings.Repeat("R", 129), false},
		{"empty", "", false},
		{"star", "*", false},
		{"gt", ">", false},
		{"trailing gt", "get>", false},
		{"space", "get user", false},
		{"newline", "get\n", false},
		{"dot", "get.user", false},
		{"slash", "get/user", false},
		{"unicode", "gét", false},
		{"nul", "\x00", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := contract.ValidRPC(tc.in); got != tc.want {
				t.Errorf("ValidRPC(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestNormalizeDomain(t *testing.T) {
	valid := []struct {
		name string
		in   string
		want string
	}{
		{"canonical", "b.example.com", "b.example.com"},
		{"digits and hyphens", "fed-1.a-infra.example.net", "fed-1.a-infra.example.net"},
		{"two labels", "example.com", "example.com"},
		// Upper case is accepted and lower-cased: this is the chosen
		// behaviour, because the contract compares domains lower-case. A
		// caller that passes B.Example.COM reaches the same backend (and the
		// same subject) as one that passes b.example.com.
		{"upper case is lower-cased", "B.Example.COM", "b.example.com"},
		{"IDNA to punycode", "bücher.example", "xn--bcher-kva.example"},
		{"IDNA upper case folded", "BÜCHER.Example", "xn--bcher-kva.example"},
		{"punycode stays", "xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"63-char label", strings.Repeat("a", 63) + ".example", strings.Repeat("a", 63) + ".example"},
		{"253 chars", domainOfLen(t, 253), domainOfLen(t, 253)},
	}
	for _, tc := range valid {
		t.Run(tc.name, func(t *testing.T) {
			got, err := contract.NormalizeDomain(tc.in)
			if err != nil {
				t.Fatalf("NormalizeDomain(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Errorf("NormalizeDomain(%q) = %q, want %q", tc.in, got, tc.want)
			}
			again, err := contract.NormalizeDomain(got)
			if err != nil || again != got {
				t.Errorf("NormalizeDomain(%q) = %q, %v; not idempotent", got, again, err)
			}
		})
	}

	invalid := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"star label", "*.example.com"},
		{"star inside", "a*b.example.com"},
		{"gt", "b.example.>"},
		{"lone gt", ">"},
		{"space", "b.example .com"},
		{"leading space", " b.example.com"},
		{"tab", "b.example.com\t"},
		{"newline", "b.example.com\n"},
		{"double dot", "b..example.com"},
		{"leading dot", ".b.example.com"},
		{"trailing dot", "b.example.com."},
		{"lone dot", "."},
		{"single label", "localhost"},
		{"underscore", "_srv.example.com"},
		{"slash", "b.example.com/x"},
		{"colon port", "b.example.com:443"},
		{"nul", "b.example.com\x00"},
		{"254 chars", domainOfLen(t, 254)},
		{"300 chars", domainOfLen(t, 300)},
		{"64-char label", strings.Repeat("a", 64) + ".example"},
		{"IDNA with star", "bücher*.example"},
		{"IDNA double dot", "bücher..example"},
		{"IDNA trailing dot", "bücher.example."},
		{"IDNA single label", "bücher"},
		{"IDNA too long", strings.Repeat("ü", 300) + ".example"},
		{"IDNA label too long after punycode", strings.Repeat("ü", 60) + ".example"},
		{"invalid UTF-8", "b\xff.example.com"},
		{"invalid UTF-8 alone", "\xff\xfe.example"},
		{"replacement character", "b\ufffd.example.com"},
		{"IDNA disallowed zero width joiner", "a\u200d.example"},
	}
	for _, tc := range invalid {
		t.Run(tc.name, func(t *testing.T) {
			got, err := contract.NormalizeDomain(tc.in)
			if err == nil {
				t.Fatalf("NormalizeDomain(%q) = %q, want domain-parse-error", tc.in, got)
			}
			if !errors.Is(err, contract.ErrDomainParseError) {
				t.Errorf("NormalizeDomain(%q) error %v is not domain-parse-error", tc.in, err)
			}
			var e *contract.Error
			if !errors.As(err, &e) || e.Code != 403 || e.Label != contract.LabelDomainParseError {
				t.Errorf("NormalizeDomain(%q) error = %#v, want *contract.Error 403 %s", tc.in, err, contract.LabelDomainParseError)
			}
			if got != "" {
				t.Errorf("NormalizeDomain(%q) returned %q with an error", tc.in, got)
			}
		})
	}
}

func TestNormalizeDomainCanonicalDoesNotAllocate(t *testing.T) {
	for _, d := range []string{"b.example.com", "xn--bcher-kva.example", domainOfLen(t, 253)} {
		t.Run(d[:min(len(d), 20)], func(t *testing.T) {
			var out string
			allocs := testing.AllocsPerRun(100, func() {
				out, _ = contract.NormalizeDomain(d)
			})
			if allocs != 0 {
				t.Errorf("NormalizeDomain(%q) allocates %v times per call, want 0", d, allocs)
			}
			if out != d {
				t.Errorf("NormalizeDomain(%q) = %q", d, out)
			}
		})
	}
}

func TestValidRequestID(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want bool
	}{
		{"nuid", "J3sJ6aDkVAoMyTUJpMO3Vn", true},
		{"uuid", "0f8fad5b-d9cb-469f-a165-70867728950e", true},
		{"punctuation", "a.b:c/d_e~f!", true},
		{"single char", "x", true},
		{"128 chars", strings.Repeat("i", 128), true},
		{"129 chars", strings.Repeat("i", 129), false},
		{"empty", "", false},
		{"space", "a b", false},
		{"tab", "a\tb", false},
		{"newline", "a\n", false},
		{"CR LF", "a\r\nb", false},
		{"DEL", "a\x7f", false},
		{"nul", "\x00", false},
		{"unicode", "idé", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := contract.ValidRequestID(tc.in); got != tc.want {
				t.Errorf("ValidRequestID(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}
