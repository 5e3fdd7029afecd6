package e2e

import (
	"bytes"
	"context"
	"encoding/json"
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

			subject, err := a.Subjects.Status(domainB)
			if err != nil {
				t.Fatal(err)
			}
			var (
				mu     sync.Mutex
				events []bus.Event
			)
			sub, err := a.NATS.Subscribe(subject, func(m *nats.Msg) {
				ev, err := bus.Decode(m)
				if err != nil {
					t.Errorf("status event: %v", err)
					return
				}
				// The event is what schemas/asyncapi.json describes.
				headers := map[string]string{contract.TypeRemoteDown: "RemoteDownHeaders", contract.TypeRemoteUp: "RemoteUpHeaders"}[ev.Type]
				if err := schemas.ValidateHeaders(headers, m.Header); err != nil {
					t.Errorf("status event headers: %v", err)
				}
				if sch, err := schemas.AsyncAPISchema("RemoteStatus"); err != nil {
					t.Error(err)
				} else if v, err := jsonschema.UnmarshalJSON(bytes.NewReader(m.Data)); err != nil {
					t.Error(err)
				} else if err := sch.Validate(v); err != nil {
					t.Errorf("status event body %s: %v", m.Data, err)
				}
				mu.Lock()
				events = append(events, ev)
				mu.Unlock()
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = sub.Unsubscribe() })
			count := func() int { mu.Lock(); defer mu.Unlock(); return len(events) }

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

			mu.Lock()
			defer mu.Unlock()
			if len(events) != 2 {
				t.Fatalf("%d status events, want 2: %+v", len(events), events)
			}
			for i, want := range []string{contract.TypeRemoteDown, contract.TypeRemoteUp} {
				ev := events[i]
				if ev.Type != want {
					t.Errorf("event %d: type %s, want %s", i, ev.Type, want)
				}
				var body struct {
					Domain string    `json:"domain"`
					Since  time.Time `json:"since"`
					Reason string    `json:"reason"`
				}
				if err := json.Unmarshal(ev.Data, &body); err != nil {
					t.Fatalf("event %d body %s: %v", i, ev.Data, err)
				}
				if body.Domain != domainB || body.Since.IsZero() || body.Reason == "" {
					t.Errorf("event %d body: %s", i, ev.Data)
				}
			}
		})
	}
}
