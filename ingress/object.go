package ingress

import (
	"context"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
)

// deleteTimeout bounds the deletion of a sent object.
const deleteTimeout = 2 * time.Second

// contentType returns ct when it is a media type, else def.
func contentType(ct, def string) string {
	if ct == "" {
		return def
	}
	if _, _, err := mime.ParseMediaType(ct); err != nil {
		return def
	}
	return ct
}

// writeObject answers with the object a component named in its reply
// (contract section 8): the object is read chunk by chunk and written as
// the response body with the reply's content type; HTTP/2 flow control
// paces the reading, so a slow remote costs a few chunks, never the body.
// Until the first byte is written, a failure is the contract's error (a
// missing object server-error, one over FED_MAX_OBJECT_BYTES
// payload-too-large); after it, the stream ends short of its
// Content-Length, which the remote sees as a broken body. An object of
// FED_OBJECT_BUCKET is deleted once sent: it was made for this answer.
func (in *Ingress) writeObject(w http.ResponseWriter, r *http.Request, req *request, log *slog.Logger, reply bus.Event) {
	ref := reply.Object
	if in.objects == nil {
		in.writeError(w, req, log, contract.Errorf(contract.LabelServerError, "the component answered with an object and this ingress has no object store"))
		return
	}
	ctx, cancel := context.WithDeadline(r.Context(), req.deadline)
	defer cancel()
	obj, err := in.objects.Open(ctx, ref)
	if err != nil {
		req.cause = err
		in.writeError(w, req, log, openError(err))
		return
	}
	defer obj.Close()
	h := w.Header()
	h.Set(contract.HTTPContentType, contentType(reply.DataContentType, contract.ContentTypeOctetStream))
	h.Set("Content-Length", strconv.FormatInt(ref.Size, 10))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	n, err := obj.WriteTo(w)
	if err != nil {
		log.Warn("streaming an object to the remote broke off", "request_id", req.id, "object", ref.String(),
			"sent", n, "size", ref.Size, "fed_component", req.component, "rpc", req.rpc, "origin", req.origin, "err", err)
		return
	}
	if ref.Bucket == in.objects.Bucket() {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), deleteTimeout)
		if err := in.objects.Delete(dctx, ref); err != nil && !errors.Is(err, bus.ErrObjectNotFound) {
			log.Info("deleting a sent object failed (it expires)", "request_id", req.id, "object", ref.String(), "err", err)
		}
		dcancel()
	}
	if log.Enabled(r.Context(), slog.LevelInfo) {
		log.Info("request served", "request_id", req.id, "status", http.StatusOK,
			"fed_component", req.component, "rpc", req.rpc, "origin", req.origin, "san", req.san,
			"object", ref.String(), "bytes", n, "duration_ms", time.Since(req.start).Milliseconds())
	}
}

// openError is the contract error of an object that cannot be opened: its
// own contract error (payload-too-large, federation-timeout), else
// server-error (the component named an object that is not there).
func openError(err error) *contract.Error {
	var ce *contract.Error
	if errors.As(err, &ce) || errors.Is(err, context.DeadlineExceeded) {
		return contract.AsError(err)
	}
	return contract.Errorf(contract.LabelServerError, "the component's answer cannot be read from the object store")
}
