package federator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/internal/iox"
	"github.com/fedbus/fedbus/lookup"
	"github.com/fedbus/fedbus/notify"
)

// maxNotifyAnswer bounds what is read of a remote's answer to a
// notification or a batch (a batch answer is a few dozen bytes per entry).
const maxNotifyAnswer = 1 << 20

// notifyAnswer is a remote's HTTP answer to a notification or a batch.
type notifyAnswer struct {
	status int
	header http.Header
	body   []byte
}

// sendOne delivers one notification as an ordinary request, POST
// /federation/<component>/<rpc> (section 6.2), with its
// Fedbus-Notification-Id and, for a fedbus remote, its sequence and the
// stream's epoch.
func (n *notifier) sendOne(ctx context.Context, s *session, it *item) delivery {
	body := it.ev.Data
	path := contract.Path(it.route.Component, it.route.RPC)
	start := n.f.now()
	a, err := n.exchange(ctx, s.domain, it.ev.ID, func(ctx context.Context, base string) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		h := n.headers(ctx, req, s.domain, it.ev.ID)
		h[contract.HTTPNotificationID] = []string{it.ev.ID}
		h[contract.HTTPNotificationSeq] = []string{strconv.FormatUint(it.seq, 10)}
		if it.ev.TraceParent != "" {
			h[contract.HTTPTraceParent] = []string{it.ev.TraceParent}
		}
		return req, nil
	})
	if err != nil {
		n.f.observe(s.d.rec, start, err, it.ev.ID)
		return n.networkFailure(err)
	}
	if a.status >= 200 && a.status <= 299 {
		n.noteCap(s.domain, a.header)
	}
	v := n.verdict(s.domain, a.status, a.header, a.body)
	n.f.observe(s.d.rec, start, errOf(v.err), it.ev.ID)
	return v
}

// errOf returns e as an error (nil for nil).
func errOf(e *contract.Error) error {
	if e == nil {
		return nil
	}
	return e
}

// sendBatch delivers items as one batch (contract.Batch) to a remote that
// accepts batches. It returns one delivery per item handled (fewer when
// the remote stopped at a failure that may pass), or nil when the remote
// refused the batch itself (it no longer takes batches): the caller then
// sends the items one by one.
func (n *notifier) sendBatch(ctx context.Context, s *session, items []*item) []delivery {
	b := contract.Batch{Epoch: notify.Epoch(n.created, s.domain), Notifications: make([]contract.BatchEntry, len(items))}
	for i, it := range items {
		e := &b.Notifications[i]
		e.ID, e.Component, e.RPC, e.Seq, e.TraceParent = it.ev.ID, it.route.Component, it.route.RPC, it.seq, it.ev.TraceParent
		e.SetBody(it.ev.Data)
	}
	body, err := json.Marshal(&b)
	if err != nil { // cannot happen: strings, numbers and valid JSON
		return nil
	}
	id := bus.NewID()
	start := n.f.now()
	a, err := n.exchange(ctx, s.domain, id, func(ctx context.Context, base string) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+contract.BatchPath, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		n.headers(ctx, req, s.domain, id)
		return req, nil
	})
	if err != nil {
		n.f.observe(s.d.rec, start, err, id)
		return []delivery{n.networkFailure(err)}
	}
	if a.status != http.StatusOK {
		// An answer: the remote is reachable, whatever it said.
		v := n.verdict(s.domain, a.status, a.header, a.body)
		n.f.observe(s.d.rec, start, errOf(v.err), id)
		if contract.Retryable(a.status) {
			return []delivery{v}
		}
		n.log.Info("remote refused a batch; sending its notifications one by one", "remote", s.domain, "status", a.status,
			"answer", contract.Truncate(string(a.body), 200))
		n.dropCap(s.domain)
		return nil
	}
	n.f.observe(s.d.rec, start, nil, id)
	var resp contract.BatchResponse
	if err := json.Unmarshal(a.body, &resp); err != nil || len(resp.Results) > len(items) {
		n.dropCap(s.domain)
		return []delivery{{err: contract.Errorf(contract.LabelRemoteError, "the batch answer of %s is not a batch response", s.domain), retry: true}}
	}
	n.noteCap(s.domain, a.header)
	out := make([]delivery, len(resp.Results))
	for i, r := range resp.Results {
		switch {
		case r.Code >= 200 && r.Code <= 299:
		case contract.Retryable(r.Code):
			out[i] = delivery{err: entryError(r), retry: true}
			return out[:i+1]
		default:
			out[i] = delivery{err: entryError(r)}
		}
	}
	return out
}

// entryError is the remote error of one batch entry.
func entryError(r contract.BatchResult) *contract.Error {
	inner := r.Error
	if inner == nil || inner.Sanitized() != inner {
		inner = contract.ParseError(r.Code, nil)
	}
	return contract.RemoteError(inner)
}

// headers sets the headers of section 2 and the epoch of domain's
// sequence numbers on req and returns them.
func (n *notifier) headers(ctx context.Context, req *http.Request, domain, id string) http.Header {
	h := req.Header
	h[contract.HTTPOriginDomain] = []string{n.f.client.origin}
	h[contract.HTTPContentType] = []string{contract.ContentTypeJSON}
	h[contract.HTTPRequestID] = []string{id}
	h[contract.HTTPNotificationEpoch] = []string{notify.Epoch(n.created, domain)}
	if dl, ok := ctx.Deadline(); ok {
		h[contract.HTTPRequestTimeout] = []string{strconv.FormatInt(max(time.Until(dl).Milliseconds(), 1), 10)}
	}
	return h
}

// verdict classifies a remote's answer (section 6.2): 2xx delivered; 429
// and 5xx may pass (a 429's Retry-After holds this destination's
// notifications and the worker's requests to it); any other status is a
// permanent refusal.
func (n *notifier) verdict(domain string, status int, header http.Header, body []byte) delivery {
	switch {
	case status >= 200 && status <= 299:
		return delivery{}
	case status == http.StatusTooManyRequests:
		ref := time.Now()
		if date, err := http.ParseTime(header.Get(contract.HTTPDate)); err == nil {
			ref = date
		}
		wait := parseRetryAfter(header.Get(contract.HTTPRetryAfter), ref)
		n.f.remotes.wait(domain, time.Now().Add(wait))
		return delivery{err: contract.RemoteError(contract.ParseError(status, body)), retry: true, wait: wait}
	case contract.Retryable(status):
		return delivery{err: contract.RemoteError(contract.ParseError(status, body)), retry: true}
	default:
		return delivery{err: contract.RemoteError(contract.ParseError(status, body))}
	}
}

// networkFailure classifies a failure before any answer: it may pass,
// except a target refused by the private-address rule (configuration, not
// an outage).
func (n *notifier) networkFailure(err error) delivery {
	e := contract.AsError(err)
	return delivery{err: e, retry: e.Label != contract.LabelFederationDenied}
}

// exchange sends the request that build makes for a target's base URL
// (https://host:port) to the SRV targets of domain in RFC 2782 order,
// falling back to the next target when one cannot be reached, as requests
// do, and returns the first answer. Its failures are *contract.Error.
func (n *notifier) exchange(ctx context.Context, domain, id string, build func(ctx context.Context, base string) (*http.Request, error)) (*notifyAnswer, error) {
	rc := n.f.client
	ctx, cancel := context.WithTimeout(ctx, n.f.cfg.RequestTimeout)
	defer cancel()
	targets, err := rc.resolver.SRV(ctx, domain)
	if err != nil {
		return nil, lookup.Failure(ctx, lookup.Outbound, domain, err)
	}
	var failures []error
	allTLS, allDenied := true, true
	for _, t := range targets {
		req, err := build(ctx, "https://"+net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))))
		if err != nil {
			return nil, contract.Errorf(contract.LabelServerError, "build request: %v", err)
		}
		a, err := readAnswer(rc.client.Do(req))
		if err == nil {
			rc.resolver.ReportSuccess(t)
			return a, nil
		}
		var ce *connectError
		if !errors.As(err, &ce) || lookup.Expired(ctx) {
			return nil, requestError(ctx, t, err)
		}
		n.log.Info("target unreachable, trying next", "request_id", id, "target", t.Host, "port", t.Port, "err", err)
		if !ce.denied {
			rc.resolver.ReportFailure(t)
		}
		failures = append(failures, err)
		allTLS = allTLS && ce.tls
		allDenied = allDenied && ce.denied
	}
	return nil, exchangeFailure(ctx, domain, targets, errors.Join(failures...), allTLS, allDenied)
}

// readAnswer reads an HTTP answer (at most maxNotifyAnswer of its body).
func readAnswer(resp *http.Response, err error) (*notifyAnswer, error) {
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := iox.ReadAllSized(io.LimitReader(resp.Body, maxNotifyAnswer), min(resp.ContentLength, maxNotifyAnswer))
	if err != nil {
		return nil, err
	}
	return &notifyAnswer{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// exchangeFailure is the error when no target of domain could be reached.
func exchangeFailure(ctx context.Context, domain string, targets []discovery.Target, joined error, allTLS, allDenied bool) *contract.Error {
	switch {
	case lookup.Expired(ctx):
		return contract.Errorf(contract.LabelTimeout, "no target of %s answered in time: %v", domain, joined)
	case allDenied:
		return contract.Errorf(contract.LabelFederationDenied, "every target of %s resolves to a refused address (FED_ALLOW_PRIVATE_TARGETS is false): %v", domain, joined)
	case allTLS:
		return contract.Errorf(contract.LabelTLSError, "TLS handshake failed with every target of %s: %v", domain, joined)
	default:
		return contract.Errorf(contract.LabelConnectionRefused, "no target of %s (%d) could be connected to: %v", domain, len(targets), joined)
	}
}

// noteCap remembers what a remote said about batches on a 2xx answer to a
// notification: HTTPBatchMaxEntries present, it takes batches; absent, it
// does not (it is not fedbus, or one that does not batch).
func (n *notifier) noteCap(domain string, h http.Header) {
	entries, err1 := strconv.Atoi(h.Get(contract.HTTPBatchMaxEntries))
	size, err2 := strconv.ParseInt(h.Get(contract.HTTPBatchMaxBytes), 10, 64)
	if err1 != nil || err2 != nil || entries < 2 || size < 1024 {
		n.dropCap(domain)
		return
	}
	n.f.remotes.setBatch(domain, entries, size)
}

// dropCap forgets that domain takes batches.
func (n *notifier) dropCap(domain string) {
	n.f.remotes.setBatch(domain, 0, 0)
}
