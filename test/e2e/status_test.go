package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/schemas"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// TestRemoteDownAndUpOnce: B's ingress stopped and restarted while A's
// three federator workers carry load gives exactly one fedbus.remote.down
// and then one fedbus.remote.up on fed.status.b.example.com, whatever
// the number of workers that saw the failures.
func TestRemoteDownAndUpOnce(t *testing.T) {
	for _, workers := range []int{1, 3} {
		t.Run(map[int]string{1: "one worker", 3: "three workers"}[workers], func(t *testing.T) {
			ca, err := testbed.NewCA("e2e CA")
			if err != nil {
				t.Fatal(err)
			}
			dnsSrv := testbed.StartDNS(t)
			a := startBackend(t, fedtest.BackendOptions{Domain: domainA, InfraHost: infraA, CA: ca, DNS: dnsSrv, Dir: t.TempDir(),
				Strategy: "allow-list", AllowList: []string{domainB}, Federators: workers, RequestTimeout: 2 * time.Second})
			b := startBackend(t, fedtest.BackendOptions{Domain: domainB, InfraHost: infraB, CA: ca, DNS: dnsSrv, Dir: t.TempDir(),
				Strategy: "allow-list", AllowList: []string{domainA}})
			serve(t, b, "brig", component)

			status := watchStatus(t, a, domainB)
			count := func() int { return len(status.events()) }

			// Load: 8 callers until the end of the test.
			var ok, failed atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			client := a.Client("/brig")
			for range 8 {
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
						if _, err := client.Call(ctx, domainB, "brig", "echo", []byte(`1`)); err != nil {
							failed.Add(1)
							time.Sleep(5 * time.Millisecond)
						} else {
							ok.Add(1)
						}
						cancel()
					}
				})
			}
			t.Cleanup(func() { close(stop); wg.Wait() })

			waitFor(t, 5*time.Second, "load flowing", func() bool { return ok.Load() > 20 })
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := b.StopIngress(ctx); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the down event", func() bool { return count() >= 1 })
			f0 := failed.Load()
			waitFor(t, 5*time.Second, "more failures", func() bool { return failed.Load() > f0+50 })
			if err := b.StartIngress(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, "the up event", func() bool { return count() >= 2 })
			ok0 := ok.Load()
			waitFor(t, 5*time.Second, "more successes", func() bool { return ok.Load() > ok0+100 })

			checkDownThenUp(t, status.events(), domainB)
		})
	}
}

// TestNotificationsAloneTellReachability: with no request traffic at all,
// the failing deliveries of A's notifications to B (B's ingress stopped)
// judge B down, and the delivery that reaches B again judges it up: one
// rule and one record per remote for requests and notifications, one
// fedbus.remote.down and one fedbus.remote.up.
func TestNotificationsAloneTellReachability(t *testing.T) {
	w := newNotifyWorld(t, 2, nil, nil)
	r := serveNotifications(t, w.b, "galley")
	status := watchStatus(t, w.a, domainB)
	if err := w.b.StopIngress(withTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	ids := publish(t, w.a, domainB, 0, 20)
	waitFor(t, 15*time.Second, "the down event", func() bool { return len(status.events()) >= 1 })
	if got := r.len(); got != 0 {
		t.Fatalf("%d notifications arrived while B's ingress was down", got)
	}
	if err := w.b.StartIngress(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "20 notifications", func() bool { return r.len() >= len(ids) })
	waitFor(t, 10*time.Second, "the up event", func() bool { return len(status.events()) >= 2 })
	checkExactlyOnceInOrder(t, r, ids, domainA)
	checkDownThenUp(t, status.events(), domainB)
}

// statusLog collects the remote status events of one domain that a
// backend publishes, each checked against schemas/asyncapi.json.
type statusLog struct {
	mu   sync.Mutex
	list []bus.Event
}

func (l *statusLog) events() []bus.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.list)
}

// watchStatus collects the status events of domain on be until the test
// ends.
func watchStatus(tb testing.TB, be *fedtest.Backend, domain string) *statusLog {
	tb.Helper()
	subject, err := be.Subjects.Status(domain)
	if err != nil {
		tb.Fatal(err)
	}
	l := &statusLog{}
	sub, err := be.NATS.Subscribe(subject, func(m *nats.Msg) {
		ev, err := bus.Decode(m)
		if err != nil {
			tb.Errorf("status event: %v", err)
			return
		}
		headers := map[string]string{contract.TypeRemoteDown: "RemoteDownHeaders", contract.TypeRemoteUp: "RemoteUpHeaders"}[ev.Type]
		if err := schemas.ValidateHeaders(headers, m.Header); err != nil {
			tb.Errorf("status event headers: %v", err)
		}
		if sch, err := schemas.AsyncAPISchema("RemoteStatus"); err != nil {
			tb.Error(err)
		} else if v, err := jsonschema.UnmarshalJSON(bytes.NewReader(m.Data)); err != nil {
			tb.Error(err)
		} else if err := sch.Validate(v); err != nil {
			tb.Errorf("status event body %s: %v", m.Data, err)
		}
		l.mu.Lock()
		l.list = append(l.list, ev)
		l.mu.Unlock()
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = sub.Unsubscribe() })
	return l
}

// checkDownThenUp checks that events are one fedbus.remote.down and then
// one fedbus.remote.up of domain, each with its since and reason.
func checkDownThenUp(tb testing.TB, events []bus.Event, domain string) {
	tb.Helper()
	if len(events) != 2 {
		tb.Fatalf("%d status events, want 2: %+v", len(events), events)
	}
	for i, want := range []string{contract.TypeRemoteDown, contract.TypeRemoteUp} {
		ev := events[i]
		if ev.Type != want {
			tb.Errorf("event %d: type %s, want %s", i, ev.Type, want)
		}
		var body struct {
			Domain string    `json:"domain"`
			Since  time.Time `json:"since"`
			Reason string    `json:"reason"`
		}
		if err := json.Unmarshal(ev.Data, &body); err != nil {
			tb.Fatalf("event %d body %s: %v", i, ev.Data, err)
		}
		if body.Domain != domain || body.Since.IsZero() || body.Reason == "" {
			tb.Errorf("event %d body: %s", i, ev.Data)
		}
	}
}
