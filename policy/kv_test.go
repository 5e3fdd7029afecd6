package policy

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

// TestBucketChangeReachesInstances runs three instances, each with its own
// NATS connection and watcher, and checks that a change made through the
// Store (as fedctl does) reaches all of them within a second.
func TestBucketChangeReachesInstances(t *testing.T) {
	srv, err := testbed.StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	admin := connect(t, srv.ClientURL())
	store, err := OpenStore(ctx, jsOf(t, admin), "fedbus", 1)
	if err != nil {
		t.Fatal(err)
	}
	var instances []*Policy
	for range 3 {
		p, err := New(contract.AllowList, []string{"a.example.com"})
		if err != nil {
			t.Fatal(err)
		}
		kv, err := jsOf(t, connect(t, srv.ClientURL())).KeyValue(ctx, "fedbus")
		if err != nil {
			t.Fatal(err)
		}
		w := NewWatcher(kv, p, slog.New(slog.DiscardHandler))
		wg.Add(1)
		go func() { defer wg.Done(); _ = w.Run(ctx) }()
		<-w.Loaded()
		instances = append(instances, p)
	}
	within := func(what string, cond func(p *Policy) bool) {
		t.Helper()
		start := time.Now()
		for _, p := range instances {
			for !cond(p) {
				if time.Since(start) > time.Second {
					t.Fatalf("%s did not reach every instance within 1s", what)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		t.Logf("%s reached 3 instances in %v", what, time.Since(start))
	}

	if _, err := store.Add(ctx, "C.example.com", Remote{}); err != nil {
		t.Fatal(err)
	}
	within("add c.example.com", func(p *Policy) bool { return p.Allowed("c.example.com") })

	if _, err := store.Add(ctx, "c.example.com", Remote{Rules: Rules{"brig": {"get-user-by-handle"}}}); err != nil {
		t.Fatal(err)
	}
	within("rules of c.example.com", func(p *Policy) bool { return p.Authorize("c.example.com", "brig", "search-users") != nil })

	if err := store.SetDefaults(ctx, Rules{"brig": {AnyRPC}}); err != nil {
		t.Fatal(err)
	}
	within("default rules", func(p *Policy) bool { return p.Authorize("a.example.com", "galley", "x") != nil })

	// An invalid entry is skipped; the others stay.
	if _, err := store.KV().Put(ctx, "remotes.BAD.x", []byte("{")); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Remove(ctx, "c.example.com"); err != nil {
		t.Fatal(err)
	}
	within("remove c.example.com", func(p *Policy) bool { return !p.Allowed("c.example.com") })
	if !instances[0].Allowed("a.example.com") {
		t.Fatal("static allow list lost")
	}

	entries, defaults, err := store.List(ctx)
	if err == nil {
		t.Fatalf("List with an invalid entry should fail, got %v %v", entries, defaults)
	}
	if err := store.KV().Delete(ctx, "remotes.BAD.x"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Add(ctx, "d.example.com", Remote{}); err != nil {
		t.Fatal(err)
	}
	entries, defaults, err = store.List(ctx)
	if err != nil || len(entries) != 1 || entries[0].Domain != "d.example.com" || defaults == nil {
		t.Fatalf("List = %v, %v, %v", entries, defaults, err)
	}
}

func connect(tb testing.TB, url string) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

func jsOf(tb testing.TB, nc *nats.Conn) jetstream.JetStream {
	tb.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}
