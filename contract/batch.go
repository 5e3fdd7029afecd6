package contract

import (
	"encoding/json"
	"net/http"
)

// Notification batches (a fedbus addition to section 6): a fedbus sender
// sends the backlog of one destination to a fedbus ingress as one ordered,
// idempotent transaction: POST BatchPath with a Batch body and the
// section 2 headers (Wire-Origin-Domain, Request-Id, Request-Timeout-Ms),
// once the remote announced with HTTPBatchMaxEntries that it accepts
// batches. The ingress handles the entries in order, as if each had been
// delivered alone (the checks of section 3 for its component and rpc,
// deduplication by origin and id, storing on fed.inbox), and answers 200
// with a BatchResponse: one result per entry handled, in order.

// Batch is the body of a batch request.
type Batch struct {
	// Epoch is the sender's HTTPNotificationEpoch (optional).
	Epoch string `json:"epoch,omitempty"`
	// Notifications are in publish order.
	Notifications []BatchEntry `json:"notifications"`
}

// BatchEntry is one notification of a Batch: what a single delivery
// carries in its path and headers, and its body.
type BatchEntry struct {
	ID          string `json:"id"` // Fedbus-Notification-Id: the ce-id
	Component   string `json:"component"`
	RPC         string `json:"rpc"`
	Seq         uint64 `json:"seq,omitempty"` // HTTPNotificationSeq
	TraceParent string `json:"traceparent,omitempty"`
	// Body is the notification's body when it is JSON (as the contract
	// expects); BodyBase64 carries any other body.
	Body       json.RawMessage `json:"body,omitempty"`
	BodyBase64 []byte          `json:"body_base64,omitempty"`
}

// SetBody puts body into e: as JSON when it is JSON, else base64.
func (e *BatchEntry) SetBody(body []byte) {
	e.Body, e.BodyBase64 = nil, nil
	switch {
	case len(body) == 0:
	case json.Valid(body):
		e.Body = body
	default:
		e.BodyBase64 = body
	}
}

// Data returns the entry's body.
func (e *BatchEntry) Data() []byte {
	if e.BodyBase64 != nil {
		return e.BodyBase64
	}
	if e.Body == nil {
		return []byte{}
	}
	return e.Body
}

// BatchResponse is the 200 answer to a batch: Results[i] is the outcome of
// Notifications[i]. It may be shorter than the batch: the ingress stops at
// the first entry it could not handle for a reason that may pass (a result
// with a 5xx or 429 code, the last one), and the entries after it were not
// handled; the sender sends them again later.
type BatchResponse struct {
	Results []BatchResult `json:"results"`
}

// BatchResult is the outcome of one entry: Code 200 when it is stored (or
// was already), else the status a single delivery would have got, with the
// contract error body.
type BatchResult struct {
	Code  int    `json:"code"`
	Error *Error `json:"error,omitempty"`
}

// Retryable reports whether a delivery answered with status may succeed
// later (section 6: network errors, timeouts, 5xx and 429 are retried; any
// other non-2xx status is a permanent refusal).
func Retryable(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}
