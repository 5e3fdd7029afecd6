package bus_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fedbus/fedbus/bus"
	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/test/testbed"
)

// TestLameDuckMove: a component serving on a server that enters lame-duck
// mode, and a client calling through a Requester on that server, move to
// the other server without a failed request (another instance of the
// component serves on the other server meanwhile).
func TestLameDuckMove(t *testing.T) {
	c, err := testbed.StartCluster(testbed.ClusterOptions{Name: "ldm", Size: 2, LameDuckDuration: time.Second, LameDuckGracePeriod: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	conn := func(first int) *nats.Conn {
		nc, err := bus.Connect(strings.Join(c.URLs(first), ","), t.Name(), discardLogger(), nats.DontRandomize())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	subjects, err := contract.NewSubjects(contract.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	// The echo component, once per server; the bus scenario's relay maps
	// the client's fed.out subject onto the component's fed.in.
	echo := func(_ context.Context, r *bus.Request) ([]byte, error) { return r.Body, nil }
	leaving, staying := conn(0), conn(1)
	for _, nc := range []*nats.Conn{leaving, staying} {
		srv, err := bus.Serve(context.Background(), nc, subjects, "brig", echo, discardLogger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	}
	for i := range c.Size() {
		if err := c.Server(i).GlobalAccount().AddMapping("fed.out.brig.echo.b.example.com", "fed.in.brig.echo.a.example.com"); err != nil {
			t.Fatal(err)
		}
	}
	req, err := bus.NewRequester(leaving, nil, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = req.Close() })
	client := bus.NewClient(req, subjects, "/test")

	var ok, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				body := fmt.Appendf(nil, `"%d-%d"`, w, n)
				got, err := client.Call(ctx, "b.example.com", "brig", "echo", body)
				cancel()
				if err == nil && string(got) != string(body) {
					err = fmt.Errorf("got %s, want %s", got, body)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				ok.Add(1)
			}
		})
	}
	waitFor(t, 10*time.Second, "the load to run", func() bool { return ok.Load() >= 200 })
	c.LameDuck(0) // returns once server 0 is down
	before := ok.Load()
	waitFor(t, 10*time.Second, "requests after the move", func() bool { return ok.Load() >= before+200 })
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed, first: %v", n, n+ok.Load(), *firstErr.Load())
	}
	if got, want := leaving.ConnectedUrl(), c.URL(1); got != want {
		t.Errorf("the connection is on %s, want %s", got, want)
	}
}
