package e2e

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/notify"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// outage is how long B's ingress is down in TestNotificationsSurviveAnOutage
// (-short: 3s).
func outage() time.Duration {
	if testing.Short() {
		return 3 * time.Second
	}
	return 30 * time.Second
}

// isNotification reports whether r delivers notifications (one, or a
// batch).
func isNotification(r *http.Request) bool {
	return r.Header.Get(contract.HTTPNotificationID) != "" || r.URL.Path == contract.BatchPath
}

// TestNotificationsSurviveAnOutage: B's ingress is down for 30 s while
// 1,000 notifications over 3 RPCs are published on A; once B is back, B's
// component has all of them, each once, in publish order.
func TestNotificationsSurviveAnOutage(t *testing.T) {
	w := newNotifyWorld(t, 1, nil, nil)
	r := serveNotifications(t, w.b, "galley")
	if err := w.b.StopIngress(withTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	ids := publish(t, w.a, domainB, 0, 1000)
	st := destinationState(t, w.a)
	waitFor(t, 10*time.Second, "A to fail and back off", func() bool { return st(domainB).Attempts > 0 })
	time.Sleep(time.Until(down.Add(outage()))) // the outage itself, not a wait for a condition
	if n := r.len(); n != 0 {
		t.Fatalf("%d notifications arrived while B's ingress was down", n)
	}
	t.Logf("B's ingress down for %s; A made %d attempts", time.Since(down).Round(time.Second), st(domainB).Attempts)
	if err := w.b.StartIngress(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitFor(t, 30*time.Second, "1,000 notifications", func() bool { return r.len() >= len(ids) })
	t.Logf("all 1,000 handled %s after B came back", time.Since(back).Round(time.Millisecond))
	checkExactlyOnceInOrder(t, r, ids, domainA)
	waitFor(t, 5*time.Second, "A's state of B to clear", func() bool { return st(domainB).Attempts == 0 })
}

// destinationState returns a function reading the delivery state of a
// destination on be.
func destinationState(tb testing.TB, be *fedtest.Backend) func(domain string) notify.State {
	tb.Helper()
	store, err := notify.OpenStore(withTimeout(tb, 10*time.Second), be.JetStream,
		notify.Names{Stream: contract.DefaultNotifyStream, Dead: contract.DefaultDeadStream}, 0, 1)
	if err != nil {
		tb.Fatal(err)
	}
	return func(domain string) notify.State {
		st, err := store.State(context.Background(), domain)
		if err != nil {
			tb.Logf("state of %s: %v", domain, err)
		}
		return st
	}
}

// slowIngress delays every notification request by d at B, so that a
// drain takes a while.
func slowIngress(d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if isNotification(r) {
				time.Sleep(d)
			}
			next.ServeHTTP(w, r)
		})
	}
}

// TestNotificationsSurviveAKilledFederator: A runs two federator
// processes; while the backlog of 1,000 drains to B, the process
// delivering it is killed with SIGKILL. The other takes over once the
// lease expires: B's component has all 1,000, each once, in order.
func TestNotificationsSurviveAKilledFederator(t *testing.T) {
	w := newWorldWith(t,
		fedtest.BackendOptions{NoFederators: true, Env: notifyEnv(map[string]string{"FED_NOTIFY_BATCH": "20"})},
		fedtest.BackendOptions{Env: notifyEnv(nil), WrapIngress: slowIngress(40 * time.Millisecond)})
	procs := map[int]*federatorProcess{}
	for range 2 {
		p := startFederatorProcess(t, w.a, nil)
		procs[p.pid()] = p
	}
	r := serveNotifications(t, w.b, "galley")
	ids := backlog(t, w, 1000)
	waitFor(t, 30*time.Second, "the drain to start", func() bool { return r.len() >= 100 })
	store, err := notify.OpenStore(withTimeout(t, 5*time.Second), w.a.JetStream, notify.Names{Stream: contract.DefaultNotifyStream, Dead: contract.DefaultDeadStream}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var victim *federatorProcess
	waitFor(t, 10*time.Second, "the lease holder", func() bool {
		holders, err := store.Holders(context.Background())
		if err == nil {
			victim = procs[holderPID(holders[domainB])]
		}
		return victim != nil
	})
	killedAt := r.len()
	victim.kill(t)
	t.Logf("killed federator %d after %d notifications", victim.pid(), killedAt)
	if killedAt >= len(ids) {
		t.Fatal("the drain ended before the kill: slow it down")
	}
	waitFor(t, 60*time.Second, "1,000 notifications", func() bool { return r.len() >= len(ids) })
	checkExactlyOnceInOrder(t, r, ids, domainA)
}

// TestNotificationsSurviveANATSRestart: A's NATS server (the notification
// stream, the leases and states) is restarted while the backlog drains to
// B: B's component has all 1,000, each once, in order.
func TestNotificationsSurviveANATSRestart(t *testing.T) {
	w := newWorldWith(t,
		fedtest.BackendOptions{Env: notifyEnv(map[string]string{"FED_NOTIFY_BATCH": "20"})},
		fedtest.BackendOptions{Env: notifyEnv(nil), WrapIngress: slowIngress(40 * time.Millisecond)})
	r := serveNotifications(t, w.b, "galley")
	ids := backlog(t, w, 1000)
	waitFor(t, 30*time.Second, "the drain to start", func() bool { return r.len() >= 100 })
	at := r.len()
	if err := w.a.RestartNATS(); err != nil {
		t.Fatal(err)
	}
	t.Logf("A's NATS restarted after %d notifications", at)
	if at >= len(ids) {
		t.Fatal("the drain ended before the restart: slow it down")
	}
	waitFor(t, 60*time.Second, "1,000 notifications", func() bool { return r.len() >= len(ids) })
	checkExactlyOnceInOrder(t, r, ids, domainA)
}

// loseAnswers makes B's ingress store every notification request but lose
// the answer of every nth one (the stream is reset instead of answered),
// as a proxy that drops the answer would; lost counts them.
func loseAnswers(nth int64, lost *atomic.Int64) func(http.Handler) http.Handler {
	var count atomic.Int64
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !isNotification(r) || count.Add(1)%nth != 0 {
				next.ServeHTTP(w, r)
				return
			}
			next.ServeHTTP(httptest.NewRecorder(), r) // stored, answer dropped
			lost.Add(1)
			panic(http.ErrAbortHandler)
		})
	}
}

// TestNotificationsWhenAnswersAreLost: every 10th answer of B's ingress to
// a notification request is lost after B stored it; A sends again, and
// B's component still has each notification once, in order (batches of
// 10, and one notification per request).
func TestNotificationsWhenAnswersAreLost(t *testing.T) {
	for _, batch := range []string{"10", "1"} {
		t.Run("batch "+batch, func(t *testing.T) {
			var lost atomic.Int64
			w := newWorldWith(t,
				fedtest.BackendOptions{Env: notifyEnv(map[string]string{"FED_NOTIFY_BATCH": batch})},
				fedtest.BackendOptions{Env: notifyEnv(nil), WrapIngress: loseAnswers(10, &lost)})
			r := serveNotifications(t, w.b, "galley")
			count := 1000
			if batch == "1" {
				count = 300
			}
			ids := backlog(t, w, count)
			waitFor(t, 60*time.Second, "every notification", func() bool { return r.len() >= len(ids) })
			checkExactlyOnceInOrder(t, r, ids, domainA)
			if lost.Load() == 0 {
				t.Fatal("no answer was lost")
			}
			t.Logf("%d answers lost, every notification handled once", lost.Load())
		})
	}
}

// TestNotificationsToADeadRemoteDoNotDelayOthers: C accepts connections
// and never answers (its requests end at their timeout) and has 200
// notifications waiting; the latency of notifications to B is that of a
// world without C, within noise.
func TestNotificationsToADeadRemoteDoNotDelayOthers(t *testing.T) {
	w := newNotifyWorld(t, 1, map[string]string{"FED_REQUEST_TIMEOUT": "5s"}, nil, domainC)
	blackhole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	t.Cleanup(func() { _ = blackhole.Close(); conns.Wait() })
	conns.Add(1)
	go func() { // accept and hold every connection, never answer
		defer conns.Done()
		var held []net.Conn
		defer func() {
			for _, c := range held {
				_ = c.Close()
			}
		}()
		for {
			c, err := blackhole.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	w.dns.SetSRV(domainC, 60, testbed.SRVRecord{Target: infraC, Port: uint16(blackhole.Addr().(*net.TCPAddr).Port), Priority: 10, Weight: 5})
	if err := w.dns.SetA(infraC, 60, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	r := serveNotifications(t, w.b, "galley")
	latencies := func(n int) []time.Duration {
		var out []time.Duration
		for i := range n {
			start := time.Now()
			want := r.len() + 1
			publish(t, w.a, domainB, i, 1)
			waitFor(t, 10*time.Second, "a notification to B", func() bool { return r.len() >= want })
			out = append(out, time.Since(start))
		}
		slices.Sort(out)
		return out
	}
	base := latencies(50)
	publish(t, w.a, domainC, 0, 200)
	st := destinationState(t, w.a)
	withC := latencies(50)
	if st(domainC).Attempts == 0 {
		t.Log("C had no failed attempt yet: its first request was still waiting for its timeout")
	}
	p := func(s []time.Duration, q float64) time.Duration { return s[int(float64(len(s)-1)*q)] }
	t.Logf("latency to B: p50 %s p99 %s without C; p50 %s p99 %s while C is down with 200 waiting",
		p(base, .5), p(base, .99), p(withC, .5), p(withC, .99))
	// C's requests hang for 5 s each: had they held B up, B's latency
	// would be seconds.
	if p(withC, .99) > time.Second {
		t.Fatalf("notifications to B were held up by C: p99 %s", p(withC, .99))
	}
}
