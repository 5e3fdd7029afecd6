//go:build integration

package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
)

// configWriter adds remotes to A's bucket during a fault, each write
// retried until acknowledged (Create: a retry of a write that was stored
// but not acknowledged answers "exists", so each key is written once).
type configWriter struct {
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	written []string
}

func startWriter(kv jetstream.KeyValue, fault string) *configWriter {
	w := &configWriter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for n := 0; ; n++ {
			key := fmt.Sprintf("remotes.r%d.%s.example.org", n, fault)
			for {
				select {
				case <-w.stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := kv.Create(ctx, key, []byte(`{}`))
				cancel()
				if err == nil || errors.Is(err, jetstream.ErrKeyExists) {
					w.mu.Lock()
					w.written = append(w.written, key)
					w.mu.Unlock()
					break
				}
			}
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *configWriter) finish() []string {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.written)
}

// checkWritten reads every acknowledged key back through server i of A
// (the one that was lost, once back) and counts each key's revisions.
func (e *env) checkWritten(t *testing.T, i int, written []string) {
	t.Helper()
	if len(written) == 0 {
		t.Error("no config write was acknowledged during the fault")
		return
	}
	nc, err := nats.Connect(e.natsURL(e.ports.natsA[i]))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, configBucket)
	if err != nil {
		t.Fatal(err)
	}
	missing, twice := 0, 0
	for _, key := range written {
		var hist []jetstream.KeyValueEntry
		for {
			hist, err = kv.History(ctx, key)
			if err == nil || ctx.Err() != nil {
				break
			}
			time.Sleep(200 * time.Millisecond) // the replica catching up
		}
		switch {
		case err != nil:
			missing++
		case len(hist) > 1:
			twice++
		}
	}
	t.Logf("config: %d keys written during the fault, %d missing, %d written twice (read through %s)", len(written), missing, twice, natsAName(i))
	if missing != 0 || twice != 0 {
		t.Errorf("config written during the fault: %d missing, %d twice", missing, twice)
	}
}

// faultWindow returns how long after at the last failed request of outs
// started (0 when none failed).
func faultWindow(outs []outcome, at time.Time) time.Duration {
	var w time.Duration
	for _, o := range outs {
		if !o.ok() {
			w = max(w, o.start.Sub(at))
		}
	}
	return w
}

// rejoined checks that server i of A carries traffic again: a component
// connected to it alone gets its calls to B through.
func (e *env) rejoined(t *testing.T, i int) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	nc, err := bus.Connect(e.natsURL(e.ports.natsA[i]), "integration rejoined "+domainA, log)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := newCaller(t, nc, domainB)
	outs := c.load(context.Background(), loadSpec{workers: 4, rpc: "echo", timeout: 3 * time.Second, total: 100})
	s := c.summarize(natsAName(i)+"-rejoined", outs)
	report(t, s)
	if s.ok != s.sent {
		t.Errorf("through the restarted %s: %s", natsAName(i), s)
	}
}

// testNodeKilled kills (SIGKILL) server 1 of A's cluster, which holds
// federator-a-2 and A's stand-in brig, while A calls B and B calls A and
// the config bucket is written, then starts it again.
func testNodeKilled(t *testing.T, e *env, a, b *caller) {
	const node = 1
	ctx := context.Background()
	js, err := jetstream.New(e.ncA)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, configBucket)
	if err != nil {
		t.Fatal(err)
	}
	w := startWriter(kv, "kill")
	stopA := a.startLoad(loadSpec{workers: 8, rpc: "echo", timeout: 3 * time.Second})
	stopB := b.startLoad(loadSpec{workers: 4, rpc: "echo", timeout: 3 * time.Second, pause: 10 * time.Millisecond})
	time.Sleep(2 * time.Second)
	killAt := time.Now()
	if err := e.kill(ctx, e.natsA[node], "KILL"); err != nil {
		stopA()
		stopB()
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second)
	restartErr := restart(ctx, e.natsA[node])
	if restartErr == nil {
		restartErr = e.waitClusterA(ctx, 60*time.Second)
	}
	rejoinedAfter := time.Since(killAt)
	time.Sleep(time.Second)
	outsA, outsB := stopA(), stopB()
	written := w.finish()
	if restartErr != nil {
		t.Fatal(restartErr)
	}
	for _, r := range []struct {
		c    *caller
		outs []outcome
		name string
	}{{a, outsA, "a-to-b"}, {b, outsB, "b-to-a"}} {
		s := r.c.summarize("nats-node-killed-"+r.name, r.outs)
		window := faultWindow(r.outs, killAt)
		s.extra = fmt.Sprintf("killed=%s last_failure_started_ms=%d rejoined_after_ms=%d", natsAName(node), window.Milliseconds(), rejoinedAfter.Milliseconds())
		report(t, s)
		if s.duplicates != 0 {
			t.Errorf("%s: %d duplicate replies", r.name, s.duplicates)
		}
		if s.late != 0 {
			t.Errorf("%s: %d replies came after the deadline", r.name, s.late)
		}
		for label, n := range s.failures {
			if strings.HasPrefix(label, "bad-") || label == labelWrong || label == labelPublish {
				t.Errorf("%s: %d requests got %s", r.name, n, label)
			}
		}
		// Every request got its reply by its deadline (3 s): a request
		// that started later than that after the kill never failed.
		if window > 3*time.Second {
			t.Errorf("%s: a request started %v after the kill failed", r.name, window)
		}
	}
	e.rejoined(t, node)
	e.checkWritten(t, node, written)
}

// testNodeLameDuck puts server 0 of A's cluster, which holds federator-a-1
// and A's ingress, in lame-duck mode (SIGUSR2) under load: the processes
// move to the other servers and no request fails. The server is started
// again afterwards.
func testNodeLameDuck(t *testing.T, e *env, a, b *caller) {
	const node = 0
	ctx := context.Background()
	js, err := jetstream.New(e.ncA)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, configBucket)
	if err != nil {
		t.Fatal(err)
	}
	w := startWriter(kv, "ldm")
	stopA := a.startLoad(loadSpec{workers: 8, rpc: "echo", timeout: 3 * time.Second})
	stopB := b.startLoad(loadSpec{workers: 4, rpc: "echo", timeout: 3 * time.Second, pause: 10 * time.Millisecond})
	time.Sleep(2 * time.Second)
	ldmAt := time.Now()
	if err := e.kill(ctx, e.natsA[node], "USR2"); err != nil {
		stopA()
		stopB()
		t.Fatal(err)
	}
	// The server exits once its clients are gone: the fedbus processes
	// move at once (its lame-duck duration, 30 s, the minimum of
	// nats-server, would close the others over that time).
	var exitErr error
	for {
		st, err := e.natsA[node].ctr.State(ctx)
		if err == nil && !st.Running {
			break
		}
		if time.Since(ldmAt) > 40*time.Second {
			exitErr = fmt.Errorf("%s still running 40s after SIGUSR2", natsAName(node))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	downAfter := time.Since(ldmAt)
	time.Sleep(time.Second)
	outsA, outsB := stopA(), stopB()
	written := w.finish()
	if exitErr != nil {
		t.Fatal(exitErr)
	}
	for _, r := range []struct {
		c    *caller
		outs []outcome
		name string
	}{{a, outsA, "a-to-b"}, {b, outsB, "b-to-a"}} {
		s := r.c.summarize("nats-node-lame-duck-"+r.name, r.outs)
		s.extra = fmt.Sprintf("server=%s down_after_ms=%d", natsAName(node), downAfter.Milliseconds())
		report(t, s)
		if s.failed() != 0 || s.duplicates != 0 {
			t.Errorf("%s: want no failure and no duplicate: %s", r.name, s)
		}
	}
	for _, svc := range []*service{e.ingressA, e.fedA[0]} {
		lines, err := containerLog(ctx, svc)
		if err != nil {
			t.Error(err)
			continue
		}
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, "moved off the lame-duck server") }) {
			t.Errorf("%s did not log its move off the lame-duck server", svc.name)
		}
	}
	if err := restart(ctx, e.natsA[node]); err != nil {
		t.Fatal(err)
	}
	if err := e.waitClusterA(ctx, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	e.rejoined(t, node)
	e.checkWritten(t, node, written)
}
