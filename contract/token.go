package contract

import (
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Token limits of the contract.
const (
	maxComponentLen = 63
	maxRPCLen       = 128
	maxDomainLen    = 253
	maxLabelLen     = 63
)

// ValidComponent reports whether s matches the component token rule
// [a-z0-9-]{1,63}. Membership in FED_COMPONENTS is checked by the caller.
func ValidComponent(s string) bool {
	if len(s) == 0 || len(s) > maxComponentLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// ValidRPC reports whether s matches the rpc token rule [A-Za-z0-9_-]{1,128}.
func ValidRPC(s string) bool {
	if len(s) == 0 || len(s) > maxRPCLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// idnaProfile converts non-ASCII domains to punycode with the lookup rules
// of UTS #46 (case folding included).
var idnaProfile = idna.Lookup

// NormalizeDomain returns the canonical form of a domain token: lower case,
// non-ASCII labels as IDNA punycode. It fails with a *Error labelled
// domain-parse-error when the result breaks the contract's rule: labels
// [a-z0-9-]{1,63}, at least two labels, at most 253 characters, no trailing
// dot. An already canonical ASCII domain is returned without allocating.
func NormalizeDomain(s string) (string, error) {
	if len(s) == 0 {
		return "", domainError(s, "empty domain")
	}
	ascii, upper := true, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 {
			ascii = false
			break
		}
		if c >= 'A' && c <= 'Z' {
			upper = true
		}
	}
	out := s
	switch {
	case !ascii:
		if len(s) > 4*maxDomainLen {
			return "", domainError(s, "domain too long")
		}
		// idna maps invalid UTF-8 to U+FFFD without an error and encodes it
		// as punycode: refuse it here.
		if !utf8.ValidString(s) {
			return "", domainError(s, "domain is not valid UTF-8")
		}
		p, err := idnaProfile.ToASCII(s)
		if err != nil {
			return "", domainError(s, "not a valid internationalised domain name")
		}
		out = strings.ToLower(p)
	case upper:
		out = strings.ToLower(s)
	}
	if reason := checkDomain(out); reason != "" {
		return "", domainError(s, reason)
	}
	return out, nil
}

// checkDomain returns why d breaks the canonical domain rule, or "".
func checkDomain(d string) string {
	if len(d) > maxDomainLen {
		return "domain longer than 253 characters"
	}
	labels, start := 0, 0
	for i := 0; i <= len(d); i++ {
		if i < len(d) && d[i] != '.' {
			c := d[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return "domain has a character outside [a-z0-9-.]"
			}
			continue
		}
		n := i - start
		if n == 0 {
			return "domain has an empty label"
		}
		if n > maxLabelLen {
			return "domain label longer than 63 characters"
		}
		labels++
		start = i + 1
	}
	if labels < 2 {
		return "domain needs at least two labels"
	}
	return ""
}

func domainError(s, reason string) *Error {
	return Errorf(LabelDomainParseError, "%s: %q", reason, Truncate(s, 64))
}

// Truncate returns s cut to n bytes, with "…" when it was longer: the
// bounded form of a peer-supplied value in an error message or log line.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ValidRequestID reports whether s may be used as a request id: 1 to 128
// printable ASCII characters without spaces.
func ValidRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
