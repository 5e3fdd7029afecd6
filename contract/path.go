package contract

import (
	"strconv"
	"strings"
)

// PathPrefix is the first segment of every federation endpoint.
const PathPrefix = "/federation/"

// BatchPath is the endpoint of notification batches between two fedbus
// backends (a fedbus addition to section 6): POST with a Batch body.
const BatchPath = "/fedbus/notifications"

// Path returns the HTTP path of an RPC: /federation/<component>/<rpc>. The
// tokens must be valid (the caller checked them, e.g. through Subjects).
func Path(component, rpc string) string {
	return PathPrefix + component + "/" + rpc
}

// ParsePath parses the escaped request path (URL.EscapedPath, so that an
// encoded "/" stays visible) of /federation/<component>/<rpc>. Anything
// else is invalid-endpoint: other prefixes, fewer or more segments, a
// trailing slash, "." or ".." segments and percent-encoding (no token
// character needs it). A well-formed component for which known returns
// false is unknown-component; a malformed one, or a malformed rpc, is
// invalid-endpoint. The checks run in the contract's order (section 3,
// step 2).
func ParsePath(escaped string, known func(component string) bool) (component, rpc string, err *Error) {
	rest, ok := strings.CutPrefix(escaped, PathPrefix)
	if !ok {
		return "", "", Errorf(LabelInvalidEndpoint, "path %s is not %s<component>/<rpc>", Quote(escaped), PathPrefix)
	}
	component, rpc, ok = strings.Cut(rest, "/")
	if !ok || strings.IndexByte(rpc, '/') >= 0 {
		return "", "", Errorf(LabelInvalidEndpoint, "path %s is not %s<component>/<rpc>", Quote(escaped), PathPrefix)
	}
	if !ValidComponent(component) {
		return "", "", Errorf(LabelInvalidEndpoint, "component %s is not [a-z0-9-]{1,63}", Quote(component))
	}
	if !known(component) {
		return "", "", Errorf(LabelUnknownComponent, "component %s is not federated here", component)
	}
	if !ValidRPC(rpc) {
		return "", "", Errorf(LabelInvalidEndpoint, "rpc %s is not [A-Za-z0-9_-]{1,128}", Quote(rpc))
	}
	return component, rpc, nil
}

// maxQuoted bounds how much of a peer-supplied value goes into an error
// message or a log line.
const maxQuoted = 64

// Quote returns a bounded, Go-quoted form of a peer-supplied value.
func Quote(s string) string {
	if len(s) > maxQuoted {
		return strconv.Quote(s[:maxQuoted]) + "…"
	}
	return strconv.Quote(s)
}

// ParseTimeoutMs parses a Request-Timeout-Ms value: a positive decimal
// integer of milliseconds.
func ParseTimeoutMs(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// maxTraceParent bounds the traceparent passed on (the W3C format has 55
// characters; later versions may append fields).
const maxTraceParent = 512

// CleanTraceParent returns v when it may be passed on as a traceparent (1
// to 512 printable ASCII characters without spaces), else "" (the trace is
// not continued).
func CleanTraceParent(v string) string {
	if len(v) > maxTraceParent {
		return ""
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] > '~' {
			return ""
		}
	}
	return v
}
