package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
)

// This file is the load of the fault tests (cluster_test.go): callers that
// send a mix of federated requests, each with a reply subject of its own,
// and record what every request got, so that a lost reply, a duplicate or
// a late one shows.

// labelNoReply is the outcome of a request whose reply never came: its
// caller's client library reports federation-timeout at the deadline.
const labelNoReply = "no-reply"

// kind is one sort of request of the mixed load and the reply it must get.
type kind struct {
	name      string
	component string
	rpc       string
	body      func(n int64) []byte
	// want checks the reply event: nil when it is the expected one.
	want func(req []byte, ev bus.Event) error
}

// mixedKinds are the requests to a remote's stand-in component: echo, a
// slow rpc, and an rpc that fails there (a remote error is its correct
// reply).
func mixedKinds(component string) []kind {
	echo := func(req []byte, ev bus.Event) error {
		if ev.Type != contract.TypeResponse || string(ev.Data) != string(req) {
			return fmt.Errorf("got %s %.100s, want the echo", ev.Type, ev.Data)
		}
		return nil
	}
	return []kind{
		{name: "echo", component: component, rpc: "echo", body: func(n int64) []byte { return fmt.Appendf(nil, `{"n":%d}`, n) }, want: echo},
		{name: "slow", component: component, rpc: "slow", body: func(int64) []byte { return []byte("50") }, want: func(_ []byte, ev bus.Event) error {
			if ev.Type != contract.TypeResponse || string(ev.Data) != `"done"` {
				return fmt.Errorf("got %s %.100s, want done", ev.Type, ev.Data)
			}
			return nil
		}},
		{name: "fail", component: component, rpc: "fail", body: func(int64) []byte { return []byte(`{}`) }, want: func(_ []byte, ev bus.Event) error {
			e := contract.ParseError(500, ev.Data)
			if ev.Type != contract.TypeError || e.Label != contract.LabelRemoteError || e.Inner == nil || e.Inner.Label != "not-found" {
				return fmt.Errorf("got %s %.200s, want the remote's not-found", ev.Type, ev.Data)
			}
			return nil
		}},
	}
}

// outcome is what one request got.
type outcome struct {
	kind       string
	start, end time.Time
	label      string // "" when the request got its expected reply
	detail     string
}

func (o outcome) ok() bool { return o.label == "" }

// loadCaller sends requests from a component connection to
// fed.out.<component>.<rpc>.<target>, each with its own reply subject
// under one inbox, and counts every reply.
type loadCaller struct {
	name    string
	nc      *nats.Conn
	target  string
	inbox   string
	subj    contract.Subjects
	timeout time.Duration
	seq     atomic.Int64
	// req, when set, sends the requests instead (a component using
	// bus.Requester, which moves with its connection off a server in
	// lame-duck mode); its replies are not counted.
	req *bus.Requester

	mu      sync.Mutex
	waiting map[string]chan *nats.Msg
	replies map[string]int
}

// newLoadCaller subscribes the caller's inbox on nc.
func newLoadCaller(tb testing.TB, name string, nc *nats.Conn, target string, timeout time.Duration) *loadCaller {
	tb.Helper()
	subj, err := contract.NewSubjects(contract.DefaultPrefix)
	if err != nil {
		tb.Fatal(err)
	}
	c := &loadCaller{name: name, nc: nc, target: target, inbox: nc.NewInbox(), subj: subj, timeout: timeout,
		waiting: make(map[string]chan *nats.Msg), replies: make(map[string]int)}
	sub, err := nc.Subscribe(c.inbox+".*", c.onReply)
	if err != nil {
		tb.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sub.Unsubscribe() })
	return c
}

// newRequesterCaller is a loadCaller whose requests go through a
// bus.Requester on nc.
func newRequesterCaller(tb testing.TB, name string, nc *nats.Conn, target string, timeout time.Duration) *loadCaller {
	tb.Helper()
	c := newLoadCaller(tb, name, nc, target, timeout)
	req, err := bus.NewRequester(nc, nil, testLogger(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = req.Close() })
	c.req = req
	return c
}

func (c *loadCaller) onReply(m *nats.Msg) {
	id := m.Subject[len(c.inbox)+1:]
	c.mu.Lock()
	c.replies[id]++
	first, ch := c.replies[id] == 1, c.waiting[id]
	c.mu.Unlock()
	if first && ch != nil {
		ch <- m
	}
}

// call sends one request of kind k and waits for its reply until the
// deadline and a grace after it (a reply after the deadline is late).
func (c *loadCaller) call(k kind) outcome {
	n := c.seq.Add(1)
	id := c.name + "-" + strconv.FormatInt(n, 10)
	ch := make(chan *nats.Msg, 1)
	c.mu.Lock()
	c.waiting[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
	}()
	body := k.body(n)
	subject, err := c.subj.Out(k.component, k.rpc, c.target)
	if err != nil {
		return outcome{kind: k.name, start: time.Now(), end: time.Now(), label: "bad-subject", detail: err.Error()}
	}
	ev := bus.Event{ID: id, Source: "/" + c.name, Type: contract.TypeRequest, TimeoutMs: c.timeout.Milliseconds(), Data: body}
	msg := ev.Message(subject)
	msg.Reply = c.inbox + "." + id
	o := outcome{kind: k.name, start: time.Now()}
	if c.req != nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout+replyGrace)
		defer cancel()
		m, err := c.req.RequestMsgWithContext(ctx, msg)
		o.end = time.Now()
		switch {
		case errors.Is(err, nats.ErrNoResponders):
			o.label = contract.LabelComponentUnavailable
		case err != nil:
			o.label, o.detail = labelNoReply, err.Error()
		default:
			o.label, o.detail = classify(k, body, m)
		}
		return o
	}
	if err := c.nc.PublishMsg(msg); err != nil {
		o.end, o.label, o.detail = time.Now(), "publish-error", err.Error()
		return o
	}
	timer := time.NewTimer(c.timeout + replyGrace)
	defer timer.Stop()
	select {
	case m := <-ch:
		o.end = time.Now()
		o.label, o.detail = classify(k, body, m)
	case <-timer.C:
		o.end, o.label = time.Now(), labelNoReply
	}
	return o
}

// replyGrace is how long after its deadline a request's reply is waited
// for (it counts as late then).
const replyGrace = time.Second

// classify returns "" for the expected reply, else a label: the contract
// error's, or "wrong-reply".
func classify(k kind, body []byte, m *nats.Msg) (string, string) {
	if len(m.Data) == 0 && m.Header.Get(contract.HeaderStatus) == contract.StatusNoResponders {
		return contract.LabelComponentUnavailable, "no responders"
	}
	ev, err := bus.Decode(m)
	if err != nil {
		return "bad-reply", err.Error()
	}
	werr := k.want(body, ev)
	if werr == nil {
		return "", ""
	}
	if ev.Type == contract.TypeError {
		e := contract.ParseError(500, ev.Data)
		if e.Label == contract.LabelRemoteError && e.Inner != nil {
			return e.Label + "(inner " + e.Inner.Label + ")", e.Inner.Message
		}
		return e.Label, e.Message
	}
	return "wrong-reply", werr.Error()
}

// recorder collects the outcomes of a load.
type recorder struct {
	mu   sync.Mutex
	outs []outcome
}

func (r *recorder) add(o outcome) {
	r.mu.Lock()
	r.outs = append(r.outs, o)
	r.mu.Unlock()
}

// okSince counts the requests started at or after t that got their reply.
func (r *recorder) okSince(t time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, o := range r.outs {
		if o.ok() && !o.start.Before(t) {
			n++
		}
	}
	return n
}

func (r *recorder) all() []outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.outs)
}

// load runs workers that each send one request at a time, cycling through
// kinds, into rec until stop is closed; the returned function waits for
// them.
func (c *loadCaller) load(workers int, kinds []kind, rec *recorder, stop <-chan struct{}) (wait func()) {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				rec.add(c.call(kinds[i%len(kinds)]))
			}
		})
	}
	return wg.Wait
}

// duplicates returns the replies beyond the first, over every request.
func (c *loadCaller) duplicates() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.replies {
		n += max(0, r-1)
	}
	return n
}

// faultReport summarises the outcomes of a fault.
type faultReport struct {
	fault      string
	sent, ok   int
	byLabel    map[string]int
	duplicates int
	// window is how long after the fault the last failed request started
	// (0 when none failed): every request started later got its reply.
	window time.Duration
	// slowest is the longest a request waited for its outcome.
	slowest time.Duration
}

func summarize(fault string, at time.Time, outs []outcome, callers ...*loadCaller) faultReport {
	r := faultReport{fault: fault, sent: len(outs), byLabel: make(map[string]int)}
	for _, o := range outs {
		r.slowest = max(r.slowest, o.end.Sub(o.start))
		if o.ok() {
			r.ok++
			continue
		}
		r.byLabel[o.label]++
		r.window = max(r.window, o.start.Sub(at))
	}
	for _, c := range callers {
		r.duplicates += c.duplicates()
	}
	return r
}

func (r faultReport) String() string {
	var parts []string
	for _, l := range slices.Sorted(maps.Keys(r.byLabel)) {
		parts = append(parts, fmt.Sprintf("%s:%d", l, r.byLabel[l]))
	}
	return fmt.Sprintf("%s: sent=%d ok=%d failed={%s} duplicates=%d last_failure_started=%v_after slowest=%v",
		r.fault, r.sent, r.ok, strings.Join(parts, ","), r.duplicates, r.window.Round(time.Millisecond), r.slowest.Round(time.Millisecond))
}

// failures returns up to n failed outcomes, for the test log.
func failures(outs []outcome, at time.Time, n int) []string {
	var lines []string
	for _, o := range outs {
		if !o.ok() && len(lines) < n {
			lines = append(lines, fmt.Sprintf("%s started %+dms, took %dms: %s %s", o.kind, o.start.Sub(at).Milliseconds(), o.end.Sub(o.start).Milliseconds(), o.label, o.detail))
		}
	}
	return lines
}
