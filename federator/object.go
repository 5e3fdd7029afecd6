package federator

import (
	"context"
	"errors"
	"io"
	"mime"
	"strconv"
	"time"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
)

// ensureTimeout bounds the creation of the object store bucket at start.
const ensureTimeout = 5 * time.Second

// ensureBucket creates the object store bucket when it is missing, so that
// a problem shows at start; without JetStream the federator still serves
// every answer that travels inline (the failure is logged, and the first
// large answer tries again).
func (f *Federator) ensureBucket(ctx context.Context) {
	if f.client.objects == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, ensureTimeout)
	defer cancel()
	if err := f.client.objects.Ensure(ctx); err != nil {
		f.log.Warn("object store bucket not available: answers that must be streamed will fail until it is", "bucket", f.client.objects.Bucket(), "err", err)
		return
	}
	f.log.Info("object store bucket ready", "bucket", f.client.objects.Bucket())
}

// answer is a remote's successful answer as the federator passes it on:
// the body inline, or (object set) the reference of the object of the
// object store that holds it (contract section 8).
type answer struct {
	body        []byte
	contentType string
	object      bus.ObjectRef
}

// reply is the fedbus.response to req that carries a.
func (a *answer) reply(req bus.Event, source string) bus.Event {
	if !a.object.IsZero() {
		return bus.ObjectReply(req, source, a.contentType, a.object)
	}
	return bus.Reply(req, source, a.body)
}

// inlineLimit returns the largest body that travels inline in the reply to
// ev: FED_MAX_RESPONSE_BYTES, which New lowers to what one NATS message
// carries; in structured mode three quarters of it (data that is not
// valid JSON is carried as base64, a third larger).
func (rc *remoteClient) inlineLimit(ev bus.Event) int64 {
	if ev.Structured {
		return rc.maxResponse / 4 * 3
	}
	return rc.maxResponse
}

// isJSON reports whether a remote's content type is application/json
// (parameters such as charset aside). No content type counts as JSON, the
// contract's body of section 2.
func isJSON(contentType string) bool {
	if contentType == "" || contentType == contract.ContentTypeJSON {
		return true // the common case, without ParseMediaType's allocations
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == contract.ContentTypeJSON
}

// streamAnswer streams a remote's body into the object store. A body over
// FED_MAX_OBJECT_BYTES is payload-too-large (at once when its
// Content-Length says so); a body that breaks off gets the error of the
// failure (federation-timeout at the deadline, else
// federation-connection-refused); a failure of the store is server-error.
// No failure leaves a readable object.
func (rc *remoteClient) streamAnswer(ctx context.Context, t discovery.Target, contentType string, body io.Reader, length int64) (*answer, error) {
	if contentType == "" {
		contentType = contract.ContentTypeJSON
	}
	if rc.objects == nil {
		return nil, contract.Errorf(contract.LabelServerError, "the answer of %s:%d must be streamed, and this federator has no object store", t.Host, t.Port)
	}
	ref, err := rc.objects.Put(ctx, contentType, body, length)
	var (
		se *bus.SourceError
		ce *contract.Error
	)
	switch {
	case err == nil:
		return &answer{contentType: contentType, object: ref}, nil
	case errors.As(err, &se):
		e := contract.AsError(requestError(ctx, t, se.Err))
		return nil, contract.Errorf(e.Label, "the answer of %s:%d broke off: %v", t.Host, t.Port, se.Err)
	case errors.As(err, &ce):
		if ce.Label == contract.LabelPayloadTooLarge {
			return nil, contract.Errorf(ce.Label, "the answer of %s:%d: %s (FED_MAX_OBJECT_BYTES)", t.Host, t.Port, ce.Message)
		}
		return nil, ce
	default:
		return nil, contract.Errorf(contract.LabelServerError, "storing the answer of %s:%d in the object store failed: %v", t.Host, t.Port, err)
	}
}

// sizeText describes the answer's body for the step lines (the demo's
// hops).
func sizeText(a *answer) string {
	if !a.object.IsZero() {
		return strconv.FormatInt(a.object.Size, 10) + " bytes, streamed into the object store as " + a.object.String()
	}
	return strconv.Itoa(len(a.body)) + " bytes"
}
