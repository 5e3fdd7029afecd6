package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/notify"
)

// Receiving notifications (contract section 6.3, and the fedbus-to-fedbus
// batches): a request carrying Fedbus-Notification-Id passes the checks of
// section 3 like any request, then is stored on
// fed.inbox.<component>.<rpc>.<origin> with JetStream (Nats-Msg-Id
// <origin>/<ce-id>) and answered 200 {} once stored, or once recognised as
// stored before: by the inbox's duplicate window, or, for a fedbus sender,
// by the mark of its epoch (notify.Marks: the highest
// Fedbus-Notification-Seq stored so far), which outlives the window.

// inbox is the ingress's inbound stream and marks, set up on first use
// (and at Start): a NATS without JetStream at start does not stop the
// ingress from serving requests.
type inbox struct {
	js jetstream.JetStream // nil: notifications are not taken

	mu    sync.Mutex
	marks *notify.Marks // nil until set up
}

// ready sets up the inbound stream and the marks bucket when they are not.
func (in *Ingress) inboxReady(ctx context.Context) (*notify.Marks, *contract.Error) {
	ib := &in.inbox
	if ib.js == nil {
		return nil, contract.Errorf(contract.LabelComponentUnavailable, "this backend takes no notifications (no JetStream)")
	}
	ib.mu.Lock()
	defer ib.mu.Unlock()
	if ib.marks != nil {
		return ib.marks, nil
	}
	cfg := notify.InboxConfig(in.cfg.InboxStream, in.subjects, notify.Limits{
		MaxBytes: in.cfg.InboxMaxBytes, MaxMsgSize: int32(min(in.cfg.MaxBodyBytes+64<<10, 1<<30)),
		Duplicates: in.cfg.InboxDuplicates, Replicas: in.cfg.JetStreamReplicas})
	_, created, err := notify.Ensure(ctx, ib.js, cfg)
	if err != nil {
		in.log.Warn("inbound notification stream not available", "stream", in.cfg.InboxStream, "err", err)
		return nil, contract.Errorf(contract.LabelComponentUnavailable, "the notification inbox is not available")
	}
	if created {
		in.log.Info("inbound notification stream created", "stream", in.cfg.InboxStream, "max_bytes", in.cfg.InboxMaxBytes,
			"duplicate_window", in.cfg.InboxDuplicates.String())
	}
	marks, err := notify.OpenMarks(ctx, ib.js, in.cfg.InboxStream, in.cfg.JetStreamReplicas)
	if err != nil {
		in.log.Warn("notification marks bucket not available", "err", err)
		return nil, contract.Errorf(contract.LabelComponentUnavailable, "the notification inbox is not available")
	}
	ib.marks = marks
	return marks, nil
}

// entry is one notification to store.
type entry struct {
	id, component, rpc, traceParent string
	seq                             uint64
	body                            []byte
}

// storeNotification stores one notification delivered alone (the request
// passed every check of section 3) and returns the answer's body, {}.
func (in *Ingress) storeNotification(ctx context.Context, w http.ResponseWriter, req *request, h http.Header, traceParent string, body []byte) (bus.Event, *contract.Error) {
	id := h.Get(contract.HTTPNotificationID)
	if !contract.ValidRequestID(id) {
		return bus.Event{}, contract.Errorf(contract.LabelInvalidRequest, "%s %s is not 1 to 128 printable ASCII characters without spaces", contract.HTTPNotificationID, contract.Quote(id))
	}
	marks, err := in.inboxReady(ctx)
	if err != nil {
		return bus.Event{}, err
	}
	e := entry{id: id, component: req.component, rpc: req.rpc, traceParent: traceParent, body: body}
	epoch := h.Get(contract.HTTPNotificationEpoch)
	if v := h.Get(contract.HTTPNotificationSeq); v != "" && notify.ValidEpoch(epoch) {
		e.seq, _ = strconv.ParseUint(v, 10, 64)
	}
	var mark uint64
	if e.seq > 0 {
		mark = in.mark(ctx, marks, req.origin, epoch)
	}
	if err := in.store(ctx, req.origin, mark, e); err != nil {
		return bus.Event{}, err
	}
	if e.seq > 0 {
		in.advance(ctx, marks, req.origin, epoch, e.seq)
	}
	in.announceBatches(w)
	return answer([]byte("{}")), nil
}

// store stores one notification of origin on the inbox, unless the mark
// of its epoch shows it stored already (its sequence is at or below it).
// The error is the contract's: 507 notification-store-full when the inbox
// is full, 413, 503 or 504.
func (in *Ingress) store(ctx context.Context, origin string, mark uint64, e entry) *contract.Error {
	if e.seq > 0 && e.seq <= mark {
		return nil
	}
	subject, err := in.subjects.Inbox(e.component, e.rpc, origin)
	if err != nil { // cannot happen: every token was checked
		return contract.AsError(err)
	}
	ev := bus.Event{ID: e.id, Source: contract.OriginSource(origin, e.component), Type: contract.TypeNotification,
		DataContentType: contract.ContentTypeJSON, TraceParent: e.traceParent, OriginDomain: origin, Data: e.body}
	msg := ev.Message(subject)
	msg.Header.Set(contract.HeaderMsgID, origin+"/"+e.id)
	if _, err := in.inbox.js.PublishMsg(ctx, msg); err != nil {
		perr := bus.StoreError(subject, bus.MessageSize(msg), err)
		if errors.Is(perr, contract.ErrComponentUnavailable) {
			// The stream went away (deleted by hand): set it up again
			// on the next notification.
			in.inbox.mu.Lock()
			in.inbox.marks = nil
			in.inbox.mu.Unlock()
		}
		return perr
	}
	return nil
}

// mark returns the mark of origin and epoch; a failure to read it is as no
// mark (the duplicate window still applies).
func (in *Ingress) mark(ctx context.Context, marks *notify.Marks, origin, epoch string) uint64 {
	m, err := marks.Get(ctx, origin, epoch)
	if err != nil {
		in.log.Debug("read notification mark", "origin", origin, "err", err)
	}
	return m
}

// advance raises the mark of origin and epoch; a failure is logged (the
// duplicate window still applies).
func (in *Ingress) advance(ctx context.Context, marks *notify.Marks, origin, epoch string, seq uint64) {
	if err := marks.Advance(context.WithoutCancel(ctx), origin, epoch, seq); err != nil {
		in.log.Info("notification mark not advanced", "origin", origin, "err", err)
	}
}

// answer is the 200 answer with a JSON body.
func answer(body []byte) bus.Event {
	return bus.Event{DataContentType: contract.ContentTypeJSON, Data: body}
}

// announceBatches tells a fedbus sender that this ingress takes batches.
func (in *Ingress) announceBatches(w http.ResponseWriter) {
	if in.cfg.BatchMax < 2 {
		return
	}
	h := w.Header()
	h.Set(contract.HTTPBatchMaxEntries, strconv.Itoa(in.cfg.BatchMax))
	h.Set(contract.HTTPBatchMaxBytes, strconv.FormatInt(in.cfg.BatchMaxBytes, 10))
}

// serveBatch handles a batch of notifications (POST contract.BatchPath)
// whose origin passed the checks of section 3 (certificate, origin,
// strategy, discovery, limits). Each entry then gets the checks a single
// delivery would (component, rpc, id, the origin's rules, body size) and
// is stored, in order; the first failure that may pass ends the batch.
func (in *Ingress) serveBatch(ctx context.Context, w http.ResponseWriter, r *http.Request, req *request) (bus.Event, *contract.Error) {
	if in.inbox.js == nil || in.cfg.BatchMax < 2 {
		return bus.Event{}, contract.Errorf(contract.LabelInvalidEndpoint, "this backend takes no notification batches")
	}
	raw, err := in.readLimited(w, r, req, in.cfg.BatchMaxBytes)
	if err != nil {
		return bus.Event{}, err
	}
	var b contract.Batch
	if jerr := json.Unmarshal(raw, &b); jerr != nil {
		req.cause = jerr
		return bus.Event{}, contract.Errorf(contract.LabelInvalidRequest, "the body is not a notification batch")
	}
	if len(b.Notifications) == 0 || len(b.Notifications) > in.cfg.BatchMax {
		return bus.Event{}, contract.Errorf(contract.LabelInvalidRequest, "a batch has 1 to %d notifications, this one %d", in.cfg.BatchMax, len(b.Notifications))
	}
	marks, err := in.inboxReady(ctx)
	if err != nil {
		return bus.Event{}, err
	}
	var mark uint64
	marked := notify.ValidEpoch(b.Epoch)
	if marked {
		mark = in.mark(ctx, marks, req.origin, b.Epoch)
	}
	results := make([]contract.BatchResult, 0, len(b.Notifications))
	var top uint64
	for i := range b.Notifications {
		be := &b.Notifications[i]
		e, cerr := in.checkEntry(req.origin, be)
		if !marked {
			e.seq = 0
		}
		if cerr == nil {
			cerr = in.store(ctx, req.origin, mark, e)
		}
		if cerr == nil {
			results = append(results, contract.BatchResult{Code: http.StatusOK})
			top = max(top, e.seq)
			continue
		}
		results = append(results, contract.BatchResult{Code: cerr.Code, Error: cerr})
		if contract.Retryable(cerr.Code) {
			in.log.Info("notification batch stopped", "request_id", req.id, "origin", req.origin, "stored", i, "of", len(b.Notifications), "label", cerr.Label, "err", cerr.Message)
			break
		}
		in.log.Info("notification of a batch refused", "request_id", req.id, "origin", req.origin, "notification_id", be.ID, "label", cerr.Label, "err", cerr.Message)
	}
	if top > 0 {
		in.advance(ctx, marks, req.origin, b.Epoch, top)
	}
	body, jerr := json.Marshal(contract.BatchResponse{Results: results})
	if jerr != nil { // cannot happen: ints and valid errors
		return bus.Event{}, contract.Errorf(contract.LabelServerError, "encode the batch answer: %v", jerr)
	}
	in.announceBatches(w)
	return answer(body), nil
}

// checkEntry runs the checks of a single delivery on a batch entry.
func (in *Ingress) checkEntry(origin string, be *contract.BatchEntry) (entry, *contract.Error) {
	if !contract.ValidComponent(be.Component) {
		return entry{}, contract.Errorf(contract.LabelInvalidEndpoint, "component %s is not [a-z0-9-]{1,63}", contract.Quote(be.Component))
	}
	if !in.known(be.Component) {
		return entry{}, contract.Errorf(contract.LabelUnknownComponent, "component %s is not federated here", be.Component)
	}
	if !contract.ValidRPC(be.RPC) {
		return entry{}, contract.Errorf(contract.LabelInvalidEndpoint, "rpc %s is not [A-Za-z0-9_-]{1,128}", contract.Quote(be.RPC))
	}
	if !contract.ValidRequestID(be.ID) {
		return entry{}, contract.Errorf(contract.LabelInvalidRequest, "notification id %s is not 1 to 128 printable ASCII characters without spaces", contract.Quote(be.ID))
	}
	if perr := in.policy.Authorize(origin, be.Component, be.RPC); perr != nil {
		return entry{}, contract.AsError(perr)
	}
	body := be.Data()
	if int64(len(body)) > in.cfg.MaxBodyBytes {
		return entry{}, contract.Errorf(contract.LabelPayloadTooLarge, "body of %d bytes is over the limit of %d", len(body), in.cfg.MaxBodyBytes)
	}
	return entry{id: be.ID, component: be.Component, rpc: be.RPC, seq: be.Seq,
		traceParent: contract.CleanTraceParent(be.TraceParent), body: body}, nil
}

// contactEvery is how often at most the ingress tells the federators that
// one origin contacted us.
const contactEvery = time.Second

// maxContacts bounds the origins remembered for contactEvery.
const maxContacts = 10000

// contacts remembers when each origin was last signalled.
type contacts struct {
	last sync.Map // origin → *atomic.Int64 (unix nanoseconds)
	n    atomic.Int64
}

// contacted tells the federators (fed.contact.<origin>) that an
// authenticated request of origin arrived, at most once per contactEvery
// per origin: its notifications waiting for a retry go now.
func (in *Ingress) contacted(origin string) {
	now := time.Now().UnixNano()
	c := &in.contacts
	if v, ok := c.last.Load(origin); ok {
		last, _ := v.(*atomic.Int64)
		prev := last.Load()
		if now-prev < int64(contactEvery) || !last.CompareAndSwap(prev, now) {
			return
		}
	} else {
		if c.n.Add(1) > maxContacts {
			c.last.Clear()
			c.n.Store(1)
		}
		v := new(atomic.Int64)
		v.Store(now)
		if _, loaded := c.last.LoadOrStore(origin, v); loaded {
			return
		}
	}
	subject, err := in.subjects.Contact(origin)
	if err != nil || in.nc == nil {
		return
	}
	if err := in.nc.Publish(subject, nil); err != nil {
		in.log.Debug("contact signal", "origin", origin, "err", err)
	}
}
