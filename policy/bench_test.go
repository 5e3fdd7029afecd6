package policy

import (
	"strconv"
	"testing"

	"github.com/fedbus/fedbus/contract"
)

// benchErr keeps the compiler from dropping the decision.
var benchErr error

// BenchmarkDecision is the authorization decision of every request: Check
// (the outbound allow list) and Authorize (the inbound per-RPC rules),
// with 10,000 remotes in the dynamic configuration.
func BenchmarkDecision(b *testing.B) {
	p, err := New(contract.AllowList, []string{"b.example.com"})
	if err != nil {
		b.Fatal(err)
	}
	remotes := make(map[string]Remote, 10000)
	for i := range 10000 {
		remotes["d"+strconv.Itoa(i)+".example.com"] = Remote{Rules: Rules{"brig": {"get-user-by-handle"}, "galley": {AnyRPC}}}
	}
	p.SetDynamic(remotes, nil)
	for _, bc := range []struct {
		name   string
		decide func() error
	}{
		{"check/static allow list", func() error { return p.Check("b.example.com") }},
		{"check/dynamic remote", func() error { return p.Check("d4242.example.com") }},
		{"check/refused", func() error { return p.Check("evil.example.com") }},
		{"authorize/rule by rpc", func() error { return p.Authorize("d4242.example.com", "brig", "get-user-by-handle") }},
		{"authorize/rule any rpc", func() error { return p.Authorize("d4242.example.com", "galley", "get-conversation") }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				benchErr = bc.decide()
			}
		})
	}
}
