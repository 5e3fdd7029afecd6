package contract

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error labels of the contract (section 4), following wire-server's labels.
const (
	LabelFederationDenied      = "federation-denied"
	LabelInvalidEndpoint       = "invalid-endpoint"
	LabelInvalidRequest        = "invalid-request"
	LabelUnknownComponent      = "unknown-component"
	LabelNoOriginDomain        = "no-origin-domain"
	LabelDomainParseError      = "domain-parse-error"
	LabelNoClientCertificate   = "no-client-certificate"
	LabelAuthenticationFailure = "authentication-failure"
	LabelInvalidDomain         = "invalid-domain"
	LabelDiscoveryFailure      = "discovery-failure"
	LabelConnectionRefused     = "federation-connection-refused"
	LabelTLSError              = "federation-tls-error"
	LabelRemoteError           = "federation-remote-error"
	LabelTimeout               = "federation-timeout"
	LabelComponentUnavailable  = "component-unavailable"
	LabelPayloadTooLarge       = "payload-too-large"
	LabelTooManyRequests       = "too-many-requests"
	// LabelUnknownError wraps a remote error body that is not a contract error.
	LabelUnknownError = "unknown-federation-error"
	// LabelServerError is used when a component handler fails with an error
	// that is not a *Error (not a contract label: an addition of fedbus).
	LabelServerError = "server-error"
	// Notifications (fedbus additions around section 6):
	// LabelStoreFull: a notification store (the sender's stream, or the
	// receiving ingress's inbox) is at its limit and refuses new
	// notifications; nothing stored is dropped. A sender retries later.
	LabelStoreFull = "notification-store-full"
	// LabelNotificationExpired: the dead-letter reason of a notification
	// older than FED_NOTIFY_MAX_AGE when it could be sent.
	LabelNotificationExpired = "notification-expired"
	// LabelBacklogLimit: the dead-letter reason of a notification pushed
	// out of its destination's backlog by FED_NOTIFY_MAX_BACKLOG.
	LabelBacklogLimit = "backlog-limit"
)

// statusOf is the contract's table of labels and HTTP statuses.
var statusOf = map[string]int{
	LabelFederationDenied:      http.StatusBadRequest,
	LabelInvalidEndpoint:       http.StatusForbidden,
	LabelInvalidRequest:        http.StatusBadRequest,
	LabelUnknownComponent:      http.StatusForbidden,
	LabelNoOriginDomain:        http.StatusForbidden,
	LabelDomainParseError:      http.StatusForbidden,
	LabelNoClientCertificate:   http.StatusForbidden,
	LabelAuthenticationFailure: http.StatusForbidden,
	LabelInvalidDomain:         http.StatusUnprocessableEntity,
	LabelDiscoveryFailure:      http.StatusBadRequest,
	LabelConnectionRefused:     521,
	LabelTLSError:              525,
	LabelRemoteError:           533,
	LabelTimeout:               http.StatusGatewayTimeout,
	LabelComponentUnavailable:  http.StatusServiceUnavailable,
	LabelPayloadTooLarge:       http.StatusRequestEntityTooLarge,
	LabelTooManyRequests:       http.StatusTooManyRequests,
	LabelServerError:           http.StatusInternalServerError,
	LabelStoreFull:             http.StatusInsufficientStorage,
	LabelNotificationExpired:   http.StatusGone,
	LabelBacklogLimit:          http.StatusInsufficientStorage,
}

// StatusOf returns the HTTP status of a label, 500 for an unknown one.
func StatusOf(label string) int {
	if s, ok := statusOf[label]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Error is the one typed federation error: the contract's error body.
// Errors are matched with errors.Is against the sentinels below (or any
// *Error), which compares labels only.
type Error struct {
	Code    int    `json:"code"`
	Label   string `json:"label"`
	Message string `json:"message"`
	// Inner is the remote backend's own error, for federation-remote-error
	// and remote federation-timeout.
	Inner *Error `json:"inner,omitempty"`
}

// Sentinels for errors.Is; they carry the label and status only.
var (
	ErrFederationDenied      = sentinel(LabelFederationDenied)
	ErrInvalidEndpoint       = sentinel(LabelInvalidEndpoint)
	ErrInvalidRequest        = sentinel(LabelInvalidRequest)
	ErrUnknownComponent      = sentinel(LabelUnknownComponent)
	ErrNoOriginDomain        = sentinel(LabelNoOriginDomain)
	ErrDomainParseError      = sentinel(LabelDomainParseError)
	ErrNoClientCertificate   = sentinel(LabelNoClientCertificate)
	ErrAuthenticationFailure = sentinel(LabelAuthenticationFailure)
	ErrInvalidDomain         = sentinel(LabelInvalidDomain)
	ErrDiscoveryFailure      = sentinel(LabelDiscoveryFailure)
	ErrConnectionRefused     = sentinel(LabelConnectionRefused)
	ErrTLSError              = sentinel(LabelTLSError)
	ErrRemoteError           = sentinel(LabelRemoteError)
	ErrTimeout               = sentinel(LabelTimeout)
	ErrComponentUnavailable  = sentinel(LabelComponentUnavailable)
	ErrPayloadTooLarge       = sentinel(LabelPayloadTooLarge)
	ErrTooManyRequests       = sentinel(LabelTooManyRequests)
	ErrStoreFull             = sentinel(LabelStoreFull)
)

func sentinel(label string) *Error {
	return &Error{Code: StatusOf(label), Label: label, Message: label}
}

// Errorf returns an *Error with the label's status and a formatted message.
func Errorf(label, format string, args ...any) *Error {
	return &Error{Code: StatusOf(label), Label: label, Message: fmt.Sprintf(format, args...)}
}

// Error implements error.
func (e *Error) Error() string {
	if e.Inner != nil {
		return fmt.Sprintf("%s (%d): %s: remote %s (%d): %s", e.Label, e.Code, e.Message, e.Inner.Label, e.Inner.Code, e.Inner.Message)
	}
	return fmt.Sprintf("%s (%d): %s", e.Label, e.Code, e.Message)
}

// Is reports whether target is an *Error with the same label.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Label == e.Label
}

// JSON returns the error body of the contract.
func (e *Error) JSON() []byte {
	b, err := json.Marshal(e)
	if err != nil { // cannot happen: only strings, ints and *Error
		return []byte(`{"code":500,"label":"server-error","message":"error encoding failed"}`)
	}
	return b
}

// maxInnerMessage is how much of a non-contract remote body is kept.
const maxInnerMessage = 200

// ParseError decodes a contract error body. A body that is not a contract
// error becomes {"code": status, "label": "unknown-federation-error",
// "message": <its first 200 bytes>}, with status the given HTTP status.
func ParseError(status int, body []byte) *Error {
	var e Error
	if err := json.Unmarshal(body, &e); err == nil && e.valid(0) {
		return &e
	}
	msg := body
	if len(msg) > maxInnerMessage {
		msg = msg[:maxInnerMessage]
	}
	return &Error{Code: status, Label: LabelUnknownError, Message: string(msg)}
}

// maxInnerDepth bounds the nesting of inner errors accepted from remotes.
const maxInnerDepth = 4

// valid reports whether e is a contract error body: code 100-599, label
// [a-z0-9-]+, and a valid inner error if any.
func (e *Error) valid(depth int) bool {
	if e.Code < 100 || e.Code > 599 || e.Label == "" || depth > maxInnerDepth {
		return false
	}
	for i := 0; i < len(e.Label); i++ {
		c := e.Label[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return e.Inner == nil || e.Inner.valid(depth+1)
}

// Sanitized returns e if it is a valid contract error body, else a
// server-error that describes it; used before e is sent to anyone.
func (e *Error) Sanitized() *Error {
	if e.valid(0) {
		return e
	}
	return Errorf(LabelServerError, "invalid error (code %d, label %q): %s", e.Code, Truncate(e.Label, 64), Truncate(e.Message, maxInnerMessage))
}

// RemoteError wraps an error reported by a remote backend: the label is
// federation-remote-error, or federation-timeout when the remote timed out,
// and the remote's body is kept as Inner.
func RemoteError(inner *Error) *Error {
	if inner.Label == LabelTimeout {
		return &Error{Code: StatusOf(LabelTimeout), Label: LabelTimeout, Message: "the remote backend timed out", Inner: inner}
	}
	return &Error{Code: StatusOf(LabelRemoteError), Label: LabelRemoteError, Message: "the remote backend answered with an error", Inner: inner}
}

// AsError converts any error to the contract error it is answered with: a
// *Error in its chain (sanitized), federation-timeout for a deadline, else
// server-error.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e.Sanitized()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return Errorf(LabelTimeout, "%v", err)
	}
	return Errorf(LabelServerError, "%v", err)
}

// KnownLabel reports whether label is one of the labels of section 4 (or
// fedbus's additions too-many-requests and server-error), so that a metric
// or a log can keep it as it is.
func KnownLabel(label string) bool {
	_, ok := statusOf[label]
	return ok || label == LabelUnknownError
}
