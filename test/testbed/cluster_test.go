package testbed

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func startCluster(tb testing.TB, opts ClusterOptions) *Cluster {
	tb.Helper()
	c, err := StartCluster(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Shutdown)
	return c
}

func connect(tb testing.TB, urls []string) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(strings.Join(urls, ","), nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// TestClusterNodeRestart: a replicated bucket keeps its data and stays
// writable while one server is down, and the server rejoins with its name,
// ports and store.
func TestClusterNodeRestart(t *testing.T) {
	c := startCluster(t, ClusterOptions{Name: "east", StoreDir: t.TempDir()})
	nc := connect(t, c.URLs(1))
	if got := nc.ConnectedUrl(); got != c.URL(1) {
		t.Fatalf("connected to %s, want %s (the first of the list)", got, c.URL(1))
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "cfg", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.PutString(ctx, "before", "1"); err != nil {
		t.Fatal(err)
	}
	c.Kill(1) // the server this client is connected to
	if c.Server(1) != nil {
		t.Fatal("server 1 still running after Kill")
	}
	// The client fails over to server 2 and the bucket is writable with
	// two of three replicas (once a new leader is elected when server 1
	// led it: nats-server's election timeout is 4 to 9 s).
	killed := time.Now()
	for {
		pctx, c := context.WithTimeout(ctx, time.Second)
		_, err := kv.PutString(pctx, "during", "2")
		c()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("bucket not writable with one server down: %v", err)
		}
	}
	t.Logf("bucket writable %v after the kill", time.Since(killed).Round(time.Millisecond))
	if err := c.Restart(1); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitFormed(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	// The restarted server serves a new client, which sees both keys.
	nc1 := connect(t, []string{c.URL(1)})
	js1, err := jetstream.New(nc1)
	if err != nil {
		t.Fatal(err)
	}
	kv1, err := js1.KeyValue(ctx, "cfg")
	if err != nil {
		t.Fatal(err)
	}
	// Its replica of the bucket catches up (reads are served by any
	// replica once it has loaded the stream).
	for _, k := range []string{"before", "during"} {
		waitUntil(t, 20*time.Second, func() bool {
			_, err := kv1.Get(ctx, k)
			return err == nil
		})
	}
}

// TestSuperClusterPrefersLocalQueueMembers: a request published in one
// cluster goes to a queue member of that cluster while one exists, and
// crosses the gateway when none is left.
func TestSuperClusterPrefersLocalQueueMembers(t *testing.T) {
	sc, err := StartSuperCluster(ClusterOptions{Name: "east", Size: 2}, ClusterOptions{Name: "west", Size: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sc.Shutdown)
	east, west := sc.Clusters[0], sc.Clusters[1]
	responder := func(urls []string, name string) *nats.Subscription {
		nc := connect(t, urls)
		sub, err := nc.QueueSubscribe("svc", "workers", func(m *nats.Msg) { _ = m.Respond([]byte(name)) })
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		return sub
	}
	local := responder(east.URLs(0), "east")
	responder(west.URLs(1), "west")
	caller := connect(t, east.URLs(1))
	// ask returns who served a request ("" when nobody did: a request
	// routed to a server whose member has just left is lost).
	ask := func() string {
		m, err := caller.Request("svc", nil, time.Second)
		if err != nil {
			return ""
		}
		return string(m.Data)
	}
	waitUntil(t, 10*time.Second, func() bool { return ask() == "east" })
	for range 20 {
		if got := ask(); got != "east" {
			t.Fatalf("served by %s while an east member exists", got)
		}
	}
	if err := local.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, func() bool { return ask() == "west" })
	for range 20 {
		if got := ask(); got != "west" {
			t.Fatalf("served by %q once the east member left", got)
		}
	}
}

func waitUntil(tb testing.TB, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
