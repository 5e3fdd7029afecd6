//go:build integration

package integration

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
)

// replyGrace is how long a caller waits past its request's deadline for
// the federator's reply (a federation-timeout reply is sent at the
// deadline).
const replyGrace = time.Second

// Labels of outcomes that are not contract errors.
const (
	labelNoReply  = "no-reply"   // nothing came back: a bus client reports federation-timeout
	labelBadReply = "bad-reply"  // the reply was not a CloudEvent
	labelWrong    = "wrong-body" // a success with another request's body
	labelPublish  = "publish-error"
)

// outcome is what one request got.
type outcome struct {
	id         string
	start, end time.Time
	label      string // "" for success
}

func (o outcome) ok() bool { return o.label == "" }

// caller sends requests from a local component of a backend to
// fed.out.brig.<rpc>.<target> like bus.Client does, but with a reply
// subject per request, so that it can count every reply: a second reply to
// one request would show up as a duplicate.
type caller struct {
	nc      *nats.Conn
	target  string
	subject func(rpc string) string
	inbox   string
	seq     atomic.Int64

	mu      sync.Mutex
	waiting map[string]chan *nats.Msg
	replies map[string]int
}

func newCaller(tb testing.TB, nc *nats.Conn, target string) *caller {
	tb.Helper()
	subjects, err := contract.NewSubjects(contract.DefaultPrefix)
	if err != nil {
		tb.Fatal(err)
	}
	c := &caller{
		nc: nc, target: target, inbox: "_INBOX.it." + nuid.Next(),
		waiting: make(map[string]chan *nats.Msg), replies: make(map[string]int),
	}
	c.subject = func(rpc string) string {
		s, err := subjects.Out("brig", rpc, target)
		if err != nil {
			tb.Fatalf("subject: %v", err)
		}
		return s
	}
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

func (c *caller) onReply(m *nats.Msg) {
	id := m.Subject[len(c.inbox)+1:]
	c.mu.Lock()
	c.replies[id]++
	n, ch := c.replies[id], c.waiting[id]
	c.mu.Unlock()
	if n == 1 && ch != nil {
		ch <- m
	}
}

// call sends one request; timeout is the caller's deadline (ce-timeoutms).
// want, when not nil, is the body a success must carry.
func (c *caller) call(rpc string, body, want []byte, timeout time.Duration) outcome {
	id := fmt.Sprintf("%s-%d", nuid.Next(), c.seq.Add(1))
	ch := make(chan *nats.Msg, 1)
	c.mu.Lock()
	c.waiting[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
	}()
	ev := bus.Event{ID: id, Source: "/integration", Type: contract.TypeRequest, TimeoutMs: timeout.Milliseconds(), Data: body}
	msg := ev.Message(c.subject(rpc))
	msg.Reply = c.inbox + "." + id
	o := outcome{id: id, start: time.Now()}
	if err := c.nc.PublishMsg(msg); err != nil {
		o.end, o.label = time.Now(), labelPublish
		return o
	}
	t := time.NewTimer(timeout + replyGrace)
	defer t.Stop()
	select {
	case m := <-ch:
		o.end = time.Now()
		o.label = classify(m, want)
	case <-t.C:
		o.end, o.label = time.Now(), labelNoReply
	}
	return o
}

// classify returns the outcome label of a reply. A NATS "no responders"
// status (nothing subscribed to the subject, e.g. while the federators
// resubscribe after a NATS restart) is component-unavailable, as
// bus.Client reports it.
func classify(m *nats.Msg, want []byte) string {
	if len(m.Data) == 0 && m.Header.Get("Status") == strconv.Itoa(http.StatusServiceUnavailable) {
		return contract.LabelComponentUnavailable
	}
	ev, err := bus.Decode(m)
	if err != nil {
		return labelBadReply
	}
	if ev.Type == contract.TypeError {
		e := contract.ParseError(500, ev.Data)
		if e.Label == contract.LabelRemoteError && e.Inner != nil {
			return e.Label + "(inner " + e.Inner.Label + ")"
		}
		return e.Label
	}
	if want != nil && string(ev.Data) != string(want) {
		return labelWrong
	}
	return ""
}

// repliesTo returns how many replies came for request id.
func (c *caller) repliesTo(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.replies[id]
}

// loadSpec describes a closed-loop load: workers each send one request at
// a time until the context ends or total requests were sent.
type loadSpec struct {
	workers int
	rpc     string // echo or slow
	slowMs  int    // body of slow
	timeout time.Duration
	total   int           // 0: until the context ends
	pause   time.Duration // between a worker's requests
}

// load runs spec and returns every outcome (in no particular order) after
// the requests in flight got their outcome.
func (c *caller) load(ctx context.Context, spec loadSpec) []outcome {
	var (
		mu   sync.Mutex
		out  []outcome
		sent atomic.Int64
		wg   sync.WaitGroup
	)
	for range spec.workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				n := sent.Add(1)
				if spec.total > 0 && n > int64(spec.total) {
					return
				}
				var body, want []byte
				switch spec.rpc {
				case "slow":
					body = fmt.Appendf(nil, "%d", spec.slowMs)
					want = fmt.Appendf(nil, `{"slept_ms":%d}`, spec.slowMs)
				default:
					body = fmt.Appendf(nil, `{"n":%d}`, n)
					want = body
				}
				o := c.call(spec.rpc, body, want, spec.timeout)
				mu.Lock()
				out = append(out, o)
				mu.Unlock()
				if spec.pause > 0 {
					select {
					case <-ctx.Done():
					case <-time.After(spec.pause):
					}
				}
			}
		})
	}
	wg.Wait()
	return out
}

// startLoad runs load in the background; stop ends it and returns the
// outcomes.
func (c *caller) startLoad(spec loadSpec) (stop func() []outcome) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan []outcome, 1)
	go func() { done <- c.load(ctx, spec) }()
	return func() []outcome {
		cancel()
		return <-done
	}
}

// summary counts the outcomes of a fault's requests.
type summary struct {
	fault      string
	sent       int
	replies    int // requests that got at least one reply
	ok         int
	failures   map[string]int // by label; no reply counts as federation-timeout
	noReply    int
	late       int // replies that came after the caller gave up
	duplicates int // replies beyond the first
	extra      string
}

// summarize counts outs; call it after the load ended (it waits a moment
// so that late and duplicate replies are seen).
func (c *caller) summarize(fault string, outs []outcome) summary {
	time.Sleep(500 * time.Millisecond)
	s := summary{fault: fault, sent: len(outs), failures: make(map[string]int)}
	for _, o := range outs {
		n := c.repliesTo(o.id)
		if n > 0 {
			s.replies++
		}
		if n > 1 {
			s.duplicates += n - 1
		}
		switch {
		case o.ok():
			s.ok++
		case o.label == labelNoReply:
			s.noReply++
			s.failures[contract.LabelTimeout]++
			if n > 0 {
				s.late++
			}
		default:
			s.failures[o.label]++
		}
	}
	return s
}

func (s summary) failed() int { return s.sent - s.ok }

// String is the SUMMARY line quoted in reports.
func (s summary) String() string {
	var parts []string
	for _, l := range slices.Sorted(maps.Keys(s.failures)) {
		parts = append(parts, fmt.Sprintf("%s:%d", l, s.failures[l]))
	}
	line := fmt.Sprintf("SUMMARY fault=%s sent=%d replies=%d ok=%d failed=%d by_label={%s} no_reply=%d late=%d duplicates=%d",
		s.fault, s.sent, s.replies, s.ok, s.failed(), strings.Join(parts, ","), s.noReply, s.late, s.duplicates)
	if s.extra != "" {
		line += " " + s.extra
	}
	return line
}

// report prints the summary to the test log and to stdout.
func report(tb testing.TB, s summary) {
	tb.Helper()
	tb.Log(s.String())
	fmt.Println(s.String())
}
