package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// Fault tests on a NATS cluster: backend A runs on three servers (routes
// on loopback, JetStream on file storage, the dynamic-config bucket with
// three replicas), its two federators on different servers; B on one
// server. A mixed load runs while a server of A is killed or leaves in
// lame-duck mode.

// requestTimeout is the deadline of the load's requests.
const requestTimeout = 2 * time.Second

// clusterWorld is A on a cluster and B on one server.
type clusterWorld struct {
	*world
	cluster *testbed.Cluster
	bucket  jetstream.KeyValue // A's dynamic config, through server 2
}

// newClusterWorld starts A on a 3-server cluster (lame-duck mode of ldm
// duration, with a grace of a fifth of it) and B, each serving the
// stand-in component (brig on B, galley on A).
func newClusterWorld(tb testing.TB, ldm time.Duration) *clusterWorld {
	tb.Helper()
	ca, err := testbed.NewCA("e2e CA")
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	cluster, err := testbed.StartCluster(testbed.ClusterOptions{Name: "a", StoreDir: dir, LameDuckDuration: ldm, LameDuckGracePeriod: ldm / 5})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(cluster.Shutdown) // after the backend's cleanup
	w := &clusterWorld{world: &world{ca: ca, dns: testbed.StartDNS(tb), dir: dir}, cluster: cluster}
	w.a = startBackend(tb, fedtest.BackendOptions{Domain: domainA, InfraHost: infraA, CA: ca, DNS: w.dns, Dir: dir,
		Strategy: "allow-list", AllowList: []string{domainB}, Federators: 2, KVBucket: "fedbus", Cluster: cluster})
	w.b = startBackend(tb, fedtest.BackendOptions{Domain: domainB, InfraHost: infraB, CA: ca, DNS: w.dns, Dir: dir,
		Strategy: "allow-list", AllowList: []string{domainA}})
	serve(tb, w.b, "brig", component)
	// Two instances of A's galley, on servers 0 and 2.
	serve(tb, w.a, "galley", component)
	serveOn(tb, connectTo(tb, cluster, 2, "galley 2"), w.a.Subjects, "galley", component)
	js, err := jetstream.New(connectTo(tb, cluster, 2, "config writer"))
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if w.bucket, err = js.KeyValue(ctx, "fedbus"); err != nil {
		tb.Fatal(err)
	}
	return w
}

// connectTo connects a component of A to server i of the cluster first
// (then the others, in order).
func connectTo(tb testing.TB, c *testbed.Cluster, i int, name string) *nats.Conn {
	tb.Helper()
	nc, err := bus.Connect(strings.Join(c.URLs(i), ","), name, testLogger(tb), nats.DontRandomize())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// mixedLoad is the load of a fault: callers of A on each server sending
// mixedKinds to B, a caller of B sending echo to A's galley (through A's
// ingress), and a writer adding remotes to A's bucket.
type mixedLoad struct {
	rec     *recorder
	callers []*loadCaller
	stop    chan struct{}
	wait    []func()
	once    sync.Once
	// written are the bucket keys whose write was acknowledged.
	mu      sync.Mutex
	written []string
}

// startLoad starts the mixed load. The callers on server bus (-1: none)
// send through a bus.Requester (a fedbus component, which moves off a
// server in lame-duck mode); the others with a reply subject per request,
// whose replies are counted.
func (w *clusterWorld) startLoad(tb testing.TB, fault string, bus int) *mixedLoad {
	tb.Helper()
	l := &mixedLoad{rec: &recorder{}, stop: make(chan struct{})}
	for i := range w.cluster.Size() {
		name := fmt.Sprintf("%s-a%d", fault, i)
		nc := connectTo(tb, w.cluster, i, "caller")
		c := newLoadCaller(tb, name, nc, domainB, requestTimeout)
		if i == bus {
			c = newRequesterCaller(tb, name, nc, domainB, requestTimeout)
		}
		l.callers = append(l.callers, c)
		l.wait = append(l.wait, c.load(3, mixedKinds("brig"), l.rec, l.stop))
	}
	cb := newLoadCaller(tb, fault+"-b", w.b.NATS, domainA, requestTimeout)
	l.callers = append(l.callers, cb)
	l.wait = append(l.wait, cb.load(3, mixedKinds("galley")[:1], l.rec, l.stop))
	var wg sync.WaitGroup
	wg.Go(func() { l.writeConfig(w.bucket, fault) })
	l.wait = append(l.wait, wg.Wait)
	tb.Cleanup(func() { l.finish() }) // when the test stops early
	return l
}

// writeConfig adds remotes r<n>.<fault>.example.org to the bucket, one at
// a time, until the load stops. A write is retried until it is
// acknowledged; Create makes a retry of a write that was stored but not
// acknowledged an "exists" answer, so each key is written once.
func (l *mixedLoad) writeConfig(kv jetstream.KeyValue, fault string) {
	for n := 0; ; n++ {
		key := fmt.Sprintf("remotes.r%d.%s.example.org", n, fault)
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := kv.Create(ctx, key, []byte(`{}`))
			cancel()
			if err == nil || errors.Is(err, jetstream.ErrKeyExists) {
				l.mu.Lock()
				l.written = append(l.written, key)
				l.mu.Unlock()
				break
			}
		}
		select {
		case <-l.stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// finish stops the load (once) and returns its outcomes and the keys
// written.
func (l *mixedLoad) finish() ([]outcome, []string) {
	l.once.Do(func() {
		close(l.stop)
		for _, wait := range l.wait {
			wait()
		}
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec.all(), l.written
}

// checkOutcomes checks what a fault's requests got: one reply each
// (nothing twice), within the deadline (a lost reply is the caller's
// federation-timeout at the deadline), failures only as contract errors,
// and success again for every request started window after the fault.
func checkOutcomes(t *testing.T, r faultReport, outs []outcome, at time.Time, window time.Duration) {
	t.Helper()
	t.Log(r)
	for _, line := range failures(outs, at, 20) {
		t.Log("  ", line)
	}
	if r.duplicates != 0 {
		t.Errorf("%d duplicate replies", r.duplicates)
	}
	// A request lost with a server (its reply or itself) ends at its
	// deadline; one made while its connection reconnects, or that found
	// no federator or component subscribed then, is component-unavailable
	// (from B to A: A's ingress answers so, and B's caller sees it as the
	// remote's error).
	for label, n := range r.byLabel {
		switch label {
		case labelNoReply, contract.LabelTimeout, contract.LabelComponentUnavailable,
			contract.LabelRemoteError + "(inner " + contract.LabelComponentUnavailable + ")",
			contract.LabelRemoteError + "(inner " + contract.LabelTimeout + ")":
		default:
			t.Errorf("%d requests failed with %s", n, label)
		}
	}
	// A reply comes by the deadline (the federator answers
	// federation-timeout then); slack for a loaded machine.
	for _, o := range outs {
		if o.label != labelNoReply && o.end.Sub(o.start) > requestTimeout+500*time.Millisecond {
			t.Errorf("a %s request got its reply after %v (deadline %v)", o.kind, o.end.Sub(o.start), requestTimeout)
			break
		}
	}
	if r.window > window {
		t.Errorf("a request started %v after the fault failed; want success again within %v", r.window, window)
	}
}

// checkConfig checks that every acknowledged write of the bucket is there
// once, and that every process of A applied it.
func (w *clusterWorld) checkConfig(t *testing.T, written []string, watcherSeen func() map[string]int) {
	t.Helper()
	if len(written) == 0 {
		t.Fatal("no config write was acknowledged")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, key := range written {
		e, err := w.bucket.Get(ctx, key)
		if err != nil {
			t.Errorf("acknowledged key %s: %v", key, err)
			continue
		}
		if e.Revision() == 0 {
			t.Errorf("key %s without revision", key)
		}
	}
	waitFor(t, 15*time.Second, "every process of A to apply the config written during the fault", func() bool {
		for _, p := range w.a.Policies() {
			for _, key := range written {
				if !p.Allowed(strings.TrimPrefix(key, "remotes.")) {
					return false
				}
			}
		}
		return true
	})
	waitFor(t, 15*time.Second, "the watcher to see every write", func() bool { return len(watcherSeen()) >= len(written) })
	for key, n := range watcherSeen() {
		if n != 1 {
			t.Errorf("the watcher saw %s %d times", key, n)
		}
	}
}

// watch counts the updates of the bucket per key, from a connection to
// server first.
func (w *clusterWorld) watch(t *testing.T, first int) func() map[string]int {
	t.Helper()
	js, err := jetstream.New(connectTo(t, w.cluster, first, "config watcher"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := js.KeyValue(ctx, "fedbus")
	if err != nil {
		t.Fatal(err)
	}
	watcher, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = watcher.Stop() })
	var mu sync.Mutex
	seen := make(map[string]int)
	go func() {
		for e := range watcher.Updates() {
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				mu.Lock()
				seen[e.Key()]++
				mu.Unlock()
			}
		}
	}()
	return func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := make(map[string]int, len(seen))
		for k, v := range seen {
			out[k] = v
		}
		return out
	}
}

// checkRejoined checks that server i is back in the cluster and carries
// traffic: a component connected to it alone calls B through the
// federators, and the server counts the messages.
func (w *clusterWorld) checkRejoined(t *testing.T, i int) {
	t.Helper()
	if err := w.cluster.WaitFormed(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	srv := w.cluster.Server(i)
	// The restarted server learns the federators' subscriptions from its
	// routes once they are up.
	subject, err := w.a.Subjects.Out("brig", "echo", domainB)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the restarted server to learn the federators' interest", func() bool {
		return srv.GlobalAccount().SubscriptionInterest(subject)
	})
	before := varz(t, srv).InMsgs
	nc, err := bus.Connect(w.cluster.URL(i), "rejoined caller", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	client := bus.NewClient(nc, w.a.Subjects, "/rejoined")
	for n := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		body := fmt.Appendf(nil, `{"rejoined":%d}`, n)
		got, err := client.Call(ctx, domainB, "brig", "echo", body)
		cancel()
		if err != nil || string(got) != string(body) {
			t.Fatalf("call through the restarted server: %s, %v", got, err)
		}
	}
	if after := varz(t, srv).InMsgs; after < before+20 {
		t.Errorf("the restarted server received %d messages for 20 requests", after-before)
	}
}

func varz(t *testing.T, s *server.Server) *server.Varz {
	t.Helper()
	v, err := s.Varz(nil)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestNodeLossUnderLoad kills a server of A's cluster while the mixed load
// runs, then starts it again: first the server of federator 0 (and of the
// callers placed there), then server 0, which holds A's components and its
// ingress.
func TestNodeLossUnderLoad(t *testing.T) {
	w := newClusterWorld(t, 0)
	for _, node := range []int{1, 0} {
		t.Run(fmt.Sprintf("kill server %d", node), func(t *testing.T) {
			fault := fmt.Sprintf("kill%d", node)
			seen := w.watch(t, (node+2)%w.cluster.Size())
			l := w.startLoad(t, fault, -1)
			start := time.Now()
			waitFor(t, 10*time.Second, "the load to run", func() bool { return l.rec.okSince(start) >= 100 })
			at := time.Now()
			w.cluster.Kill(node)
			// Requests started after the reconnect window succeed.
			waitFor(t, 15*time.Second, "successes after the kill", func() bool { return l.rec.okSince(at.Add(time.Second)) >= 100 })
			if err := w.cluster.Restart(node); err != nil {
				t.Fatal(err)
			}
			w.checkRejoined(t, node)
			outs, written := l.finish()
			checkOutcomes(t, summarize(fault, at, outs, l.callers...), outs, at, time.Second)
			w.checkConfig(t, written, seen)
		})
	}
}

// TestNodeLameDuckUnderLoad puts a server of A's cluster in lame-duck mode
// while the mixed load runs: no request may fail.
func TestNodeLameDuckUnderLoad(t *testing.T) {
	w := newClusterWorld(t, 2*time.Second)
	for _, node := range []int{1, 0} {
		t.Run(fmt.Sprintf("lame duck server %d", node), func(t *testing.T) {
			fault := fmt.Sprintf("ldm%d", node)
			seen := w.watch(t, (node+2)%w.cluster.Size())
			// The callers on the server leaving use bus.Requester: a
			// plain nats.go subscription loses what is in flight when
			// the server closes its connection.
			l := w.startLoad(t, fault, node)
			start := time.Now()
			waitFor(t, 10*time.Second, "the load to run", func() bool { return l.rec.okSince(start) >= 100 })
			at := time.Now()
			w.cluster.LameDuck(node) // returns once the server is down
			if err := w.cluster.Restart(node); err != nil {
				t.Fatal(err)
			}
			w.checkRejoined(t, node)
			outs, written := l.finish()
			r := summarize(fault, at, outs, l.callers...)
			checkOutcomes(t, r, outs, at, 0)
			if r.ok != r.sent {
				t.Errorf("%d of %d requests failed", r.sent-r.ok, r.sent)
			}
			w.checkConfig(t, written, seen)
		})
	}
}
