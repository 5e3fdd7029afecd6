package policy

import (
	"errors"
	"testing"

	"github.com/fedbus/fedbus/contract"
)

func TestStrategies(t *testing.T) {
	cases := []struct {
		name     string
		strategy string
		list     []string
		remotes  map[string]Remote
		domain   string
		want     bool
	}{
		{name: "allow-none refuses", strategy: contract.AllowNone, domain: "b.example.com"},
		{name: "allow-none ignores the bucket", strategy: contract.AllowNone, remotes: map[string]Remote{"b.example.com": {}}, domain: "b.example.com"},
		{name: "allow-all allows", strategy: contract.AllowAll, domain: "b.example.com", want: true},
		{name: "allow-list static", strategy: contract.AllowList, list: []string{"B.example.com"}, domain: "b.example.com", want: true},
		{name: "allow-list dynamic", strategy: contract.AllowList, remotes: map[string]Remote{"c.example.com": {}}, domain: "c.example.com", want: true},
		{name: "allow-list other", strategy: contract.AllowList, list: []string{"b.example.com"}, domain: "c.example.com"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(tc.strategy, tc.list)
			if err != nil {
				t.Fatal(err)
			}
			p.SetDynamic(tc.remotes, nil)
			if got := p.Allowed(tc.domain); got != tc.want {
				t.Fatalf("Allowed(%s) = %v, want %v", tc.domain, got, tc.want)
			}
			err = p.Check(tc.domain)
			if tc.want != (err == nil) || (err != nil && !errors.Is(err, contract.ErrFederationDenied)) {
				t.Fatalf("Check(%s) = %v", tc.domain, err)
			}
		})
	}
}

func TestNewRefusesBadInput(t *testing.T) {
	if _, err := New("allow-some", nil); !errors.Is(err, ErrBadStrategy) {
		t.Fatalf("got %v", err)
	}
	if _, err := New(contract.AllowList, []string{"not a domain"}); !errors.Is(err, contract.ErrDomainParseError) {
		t.Fatalf("got %v", err)
	}
}

func TestAuthorize(t *testing.T) {
	p, err := New(contract.AllowList, []string{"a.example.com", "b.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	p.SetDynamic(map[string]Remote{
		"b.example.com": {Rules: Rules{"brig": {"get-user-by-handle"}}},
		"c.example.com": {},
	}, Rules{"brig": {AnyRPC}, "galley": {"get-conversations"}})
	cases := []struct {
		name, origin, comp, rpc string
		ok                      bool
	}{
		{name: "defaults allow any brig rpc", origin: "a.example.com", comp: "brig", rpc: "anything", ok: true},
		{name: "defaults allow one galley rpc", origin: "a.example.com", comp: "galley", rpc: "get-conversations", ok: true},
		{name: "defaults refuse another galley rpc", origin: "a.example.com", comp: "galley", rpc: "leave", ok: false},
		{name: "defaults refuse cargohold", origin: "a.example.com", comp: "cargohold", rpc: "get-asset", ok: false},
		{name: "own rules allow", origin: "b.example.com", comp: "brig", rpc: "get-user-by-handle", ok: true},
		{name: "own rules refuse", origin: "b.example.com", comp: "brig", rpc: "search-users", ok: false},
		{name: "dynamic remote without rules uses defaults", origin: "c.example.com", comp: "brig", rpc: "x", ok: true},
		{name: "unknown origin", origin: "d.example.com", comp: "brig", rpc: "x", ok: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := p.Authorize(tc.origin, tc.comp, tc.rpc)
			if tc.ok != (err == nil) {
				t.Fatalf("Authorize(%s, %s, %s) = %v, want ok=%v", tc.origin, tc.comp, tc.rpc, err, tc.ok)
			}
			if err != nil && !errors.Is(err, contract.ErrFederationDenied) {
				t.Fatalf("error %v is not federation-denied", err)
			}
		})
	}
	t.Run("no rules at all allow everything", func(t *testing.T) {
		p, _ := New(contract.AllowAll, nil)
		if err := p.Authorize("x.example.com", "galley", "leave"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestParseEntry(t *testing.T) {
	cases := []struct {
		name, key, value string
		domain           string
		err              bool
	}{
		{name: "remote without rules", key: "remotes.b.example.com", value: "", domain: "b.example.com"},
		{name: "remote with rules", key: "remotes.b.example.com", value: `{"rules":{"brig":["*"]}}`, domain: "b.example.com"},
		{name: "defaults", key: "defaults", value: `{"rules":{"brig":["get-user-by-handle"]}}`},
		{name: "unknown key", key: "other", value: "", err: true},
		{name: "not canonical", key: "remotes.B.example.com", value: "", err: true},
		{name: "bad domain", key: "remotes.b..example.com", value: "", err: true},
		{name: "bad json", key: "remotes.b.example.com", value: "{", err: true},
		{name: "unknown field", key: "remotes.b.example.com", value: `{"rulez":{}}`, err: true},
		{name: "bad component", key: "remotes.b.example.com", value: `{"rules":{"BRIG":["*"]}}`, err: true},
		{name: "bad rpc", key: "remotes.b.example.com", value: `{"rules":{"brig":["a b"]}}`, err: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, err := ParseEntry(tc.key, []byte(tc.value))
			if tc.err != (err != nil) {
				t.Fatalf("ParseEntry = %+v, %v; want error %v", e, err, tc.err)
			}
			if err == nil && e.Domain != tc.domain {
				t.Fatalf("domain %q, want %q", e.Domain, tc.domain)
			}
		})
	}
}

func FuzzParseEntry(f *testing.F) {
	f.Add("remotes.b.example.com", []byte(`{"rules":{"brig":["*"]}}`))
	f.Add("defaults", []byte(`{"rules":{"galley":["get-conversations"]}}`))
	f.Add("remotes.b.example.com", []byte(``))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		e, err := ParseEntry(key, value)
		if err != nil {
			return
		}
		if e.Domain != "" {
			if d, err := contract.NormalizeDomain(e.Domain); err != nil || d != e.Domain {
				t.Fatalf("accepted non-canonical domain %q", e.Domain)
			}
		}
		if err := e.Remote.Rules.Validate(); err != nil {
			t.Fatalf("accepted invalid rules: %v", err)
		}
		if err := e.Defaults.Validate(); err != nil {
			t.Fatalf("accepted invalid defaults: %v", err)
		}
	})
}
