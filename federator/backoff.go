package federator

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Backoff after a remote's 429 (the contract is silent on it): a remote
// ingress that answers 429 too-many-requests asks us, with Retry-After, to
// wait. Until then this worker's further requests to that domain fail
// here with too-many-requests, without any network call, instead of
// hammering a backend that has already said it is over its limit.
const (
	// defaultRetryAfter is the wait of a 429 without a usable Retry-After.
	defaultRetryAfter = time.Second
	// maxRetryAfter caps the wait: a remote (or a broken header) cannot
	// cut it off for longer.
	maxRetryAfter = time.Minute
)

// backoffTimeFormat is RFC 3339 in milliseconds: how a too-many-requests
// message says until when a remote asked us to wait.
const backoffTimeFormat = "2006-01-02T15:04:05.000Z07:00"

// parseRetryAfter returns how long the Retry-After value v of a 429 asks
// us to wait (RFC 9110 section 10.2.3): delay-seconds (1*DIGIT), or an
// HTTP-date in any of the three forms of section 5.6.7, taken relative to
// ref (the response's Date, so that the two clocks of the remote agree,
// or our time of receipt). An absent or unparseable value (a sign, a
// fraction, garbage) gives defaultRetryAfter; a date not in the future
// gives 0 (retry now); every wait is capped at maxRetryAfter.
func parseRetryAfter(v string, ref time.Time) time.Duration {
	v = strings.Trim(v, " \t") // OWS
	if v == "" {
		return defaultRetryAfter
	}
	if allDigits(v) {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n >= uint64(maxRetryAfter/time.Second) {
			return maxRetryAfter // out of range: a very long wait
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return defaultRetryAfter
	}
	return min(max(t.Sub(ref), 0), maxRetryAfter)
}

// allDigits reports whether s is one or more ASCII digits.
func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
