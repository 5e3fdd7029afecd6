package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/fedbus/fedbus/test/fedtest"
	"github.com/fedbus/fedbus/test/testbed"
)

// TestRegionsPreferLocalFederators runs backend A in two regions: two NATS
// clusters, east and west, joined by a gateway (a supercluster), with two
// federators in each. A component in east is served by east's federators
// while they exist (a gateway hands a queue group's message to a local
// member first), by west's once both are stopped, and by east's again once
// one is back.
func TestRegionsPreferLocalFederators(t *testing.T) {
	sc, err := testbed.StartSuperCluster(testbed.ClusterOptions{Name: "east", Size: 2}, testbed.ClusterOptions{Name: "west", Size: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sc.Shutdown)
	east, west := sc.Clusters[0], sc.Clusters[1]
	ca, err := testbed.NewCA("e2e CA")
	if err != nil {
		t.Fatal(err)
	}
	w := &world{ca: ca, dns: testbed.StartDNS(t), dir: t.TempDir()}
	// Federators 0 and 1 on east's servers (the backend's cluster).
	w.a = startBackend(t, fedtest.BackendOptions{Domain: domainA, InfraHost: infraA, CA: ca, DNS: w.dns, Dir: w.dir,
		Strategy: "allow-list", AllowList: []string{domainB}, Federators: 2, Cluster: east})
	w.b = startBackend(t, fedtest.BackendOptions{Domain: domainB, InfraHost: infraB, CA: ca, DNS: w.dns, Dir: w.dir,
		Strategy: "allow-list", AllowList: []string{domainA}})
	serve(t, w.b, "brig", component)
	// Federators 2 and 3 in west.
	for i := range west.Size() {
		if _, err := w.a.AddFederator(fmt.Sprint(west.URL(i))); err != nil {
			t.Fatal(err)
		}
	}
	eastFeds, westFeds := []int{0, 1}, []int{2, 3}

	served := func() []uint64 {
		var n []uint64
		for i := range w.a.Federators {
			n = append(n, w.a.FederatorNATS(i).Stats().InMsgs)
		}
		return n
	}
	// call makes n calls from a component of A in east and returns how
	// many requests each federator received meanwhile.
	client := w.a.Client("/brig")
	call := func(t *testing.T, n int) []uint64 {
		t.Helper()
		before := served()
		for i := range n {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			body := fmt.Appendf(nil, `{"n":%d}`, i)
			got, err := client.Call(ctx, domainB, "brig", "echo", body)
			cancel()
			if err != nil || string(got) != string(body) {
				t.Fatalf("call %d: %s, %v", i, got, err)
			}
		}
		after := served()
		for i := range after {
			after[i] -= before[i]
		}
		return after
	}
	sum := func(counts []uint64, feds []int) (s uint64) {
		for _, i := range feds {
			s += counts[i]
		}
		return s
	}
	// West's interest in the queue group reaches east through the
	// gateway; it must not draw east's requests.
	waitFor(t, 10*time.Second, "west's federators to subscribe", func() bool {
		for _, i := range westFeds {
			if w.a.FederatorNATS(i).NumSubscriptions() == 0 {
				return false
			}
		}
		return true
	})

	t.Run("local federators serve", func(t *testing.T) {
		got := call(t, 200)
		t.Logf("requests per federator (east 0, 1; west 2, 3): %v", got)
		if sum(got, eastFeds) != 200 || sum(got, westFeds) != 0 {
			t.Errorf("east served %d, west %d of 200; want all in east", sum(got, eastFeds), sum(got, westFeds))
		}
		if slices.Contains(got[:2], 0) {
			t.Errorf("an east federator served nothing: %v", got)
		}
	})
	t.Run("the other region serves when no local federator is left", func(t *testing.T) {
		for _, i := range eastFeds {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := w.a.StopFederator(ctx, i)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
		got := call(t, 200)
		t.Logf("requests per federator (east 0, 1 stopped; west 2, 3): %v", got)
		if sum(got, westFeds) != 200 {
			t.Errorf("west served %d of 200", sum(got, westFeds))
		}
	})
	t.Run("local again once a local federator is back", func(t *testing.T) {
		i, err := w.a.AddFederator(east.URL(1))
		if err != nil {
			t.Fatal(err)
		}
		got := call(t, 200)
		t.Logf("requests per federator (east 0, 1 stopped, 4 new; west 2, 3): %v", got)
		if got[i] != 200 {
			t.Errorf("the new east federator served %d of 200: %v", got[i], got)
		}
	})
}
