package ingress

import (
	"strconv"
	"strings"

	"github.com/fedbus/fedbus/contract"
)

// pathPrefix is the first segment of every federation endpoint.
const pathPrefix = "/federation/"

// parsePath parses the escaped request path (URL.EscapedPath, so that an
// encoded "/" stays visible) of /federation/<component>/<rpc>. Anything else
// is invalid-endpoint: other prefixes, fewer or more segments, a trailing
// slash, "." or ".." segments and percent-encoding (no token character
// needs it). A well-formed component that is not in components is
// unknown-component; a malformed one, or a malformed rpc, is
// invalid-endpoint.
func parsePath(escaped string, components map[string]struct{}) (component, rpc string, err *contract.Error) {
	rest, ok := strings.CutPrefix(escaped, pathPrefix)
	if !ok {
		return "", "", contract.Errorf(contract.LabelInvalidEndpoint, "path %s is not %s<component>/<rpc>", quote(escaped), pathPrefix)
	}
	component, rpc, ok = strings.Cut(rest, "/")
	if !ok || strings.IndexByte(rpc, '/') >= 0 {
		return "", "", contract.Errorf(contract.LabelInvalidEndpoint, "path %s is not %s<component>/<rpc>", quote(escaped), pathPrefix)
	}
	if !contract.ValidComponent(component) {
		return "", "", contract.Errorf(contract.LabelInvalidEndpoint, "component %s is not [a-z0-9-]{1,63}", quote(component))
	}
	if _, known := components[component]; !known {
		return "", "", contract.Errorf(contract.LabelUnknownComponent, "component %s is not federated here", component)
	}
	if !contract.ValidRPC(rpc) {
		return "", "", contract.Errorf(contract.LabelInvalidEndpoint, "rpc %s is not [A-Za-z0-9_-]{1,128}", quote(rpc))
	}
	return component, rpc, nil
}

// maxQuoted bounds how much of a client-supplied value goes into an error
// message or a log line.
const maxQuoted = 64

// quote returns a bounded, Go-quoted form of a client-supplied value.
func quote(s string) string {
	if len(s) > maxQuoted {
		return strconv.Quote(s[:maxQuoted]) + "…"
	}
	return strconv.Quote(s)
}

// parseTimeoutMs parses a Request-Timeout-Ms value: a positive decimal
// integer of milliseconds.
func parseTimeoutMs(s string) (int64, bool) {
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
