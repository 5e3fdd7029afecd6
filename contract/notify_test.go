package contract_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/fedbus/fedbus/contract"
)

// TestNotificationSubjects covers the subjects of section 6 and fedbus's
// additions around it: dead letters, wake-up copies and contact signals.
func TestNotificationSubjects(t *testing.T) {
	s := newSubjects(t, contract.DefaultPrefix)
	built := []struct {
		name string
		got  func() (string, error)
		want string
	}{
		{"notify", func() (string, error) { return s.Notify("galley", "on-x", "B.Example.com") }, "fed.notify.galley.on-x.b.example.com"},
		{"inbox", func() (string, error) { return s.Inbox("galley", "on-x", "a.example.com") }, "fed.inbox.galley.on-x.a.example.com"},
		{"inbox of an origin", func() (string, error) { return s.InboxOrigin("galley", "a.example.com") }, "fed.inbox.galley.*.a.example.com"},
		{"dead", func() (string, error) { return s.Dead("galley", "on-x", "b.example.com") }, "fed.dead.galley.on-x.b.example.com"},
		{"dead of a domain", func() (string, error) { return s.DeadDomain("b.example.com") }, "fed.dead.*.*.b.example.com"},
		{"notify of a domain", func() (string, error) { return s.NotifyDomain("b.example.com") }, "fed.notify.*.*.b.example.com"},
		{"contact", func() (string, error) { return s.Contact("A.example.com") }, "fed.contact.a.example.com"},
		{"dead, invalid", func() (string, error) { return s.DeadInvalid(), nil }, "fed.dead._invalid"},
		{"dead, all", func() (string, error) { return s.DeadAll(), nil }, "fed.dead.>"},
		{"notified, all", func() (string, error) { return s.NotifiedAll(), nil }, "fed.notified.>"},
		{"contact, all", func() (string, error) { return s.ContactAll(), nil }, "fed.contact.>"},
	}
	for _, tc := range built {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := tc.got(); err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	refused := []struct {
		name string
		err  error
		want *contract.Error
	}{
		{"dead with a wildcard", second(s.Dead("galley", "*", "b.example.com")), contract.ErrInvalidEndpoint},
		{"inbox of an origin, bad component", second(s.InboxOrigin("Galley", "a.example.com")), contract.ErrInvalidEndpoint},
		{"inbox of an origin, bad domain", second(s.InboxOrigin("galley", "a.*")), contract.ErrDomainParseError},
		{"contact with a wildcard", second(s.Contact(">")), contract.ErrDomainParseError},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, tc.want) {
				t.Fatalf("got %v, want %s", tc.err, tc.want.Label)
			}
		})
	}
	t.Run("parse", func(t *testing.T) {
		if r, err := s.ParseDead("fed.dead.galley.on-x.b.example.com"); err != nil || r.Domain != "b.example.com" || r.RPC != "on-x" {
			t.Fatalf("ParseDead: %+v, %v", r, err)
		}
		if r, err := s.ParseNotified("fed.notified.galley.on-x.b.example.com"); err != nil || r.Domain != "b.example.com" {
			t.Fatalf("ParseNotified: %+v, %v", r, err)
		}
		if d, err := s.ParseContact("fed.contact.a.example.com"); err != nil || d != "a.example.com" {
			t.Fatalf("ParseContact: %q, %v", d, err)
		}
		if _, err := s.ParseContact("fed.status.a.example.com"); !errors.Is(err, contract.ErrInvalidEndpoint) {
			t.Fatalf("ParseContact of another kind: %v", err)
		}
	})
}

func second(_ string, err error) error { return err }

func TestBatchEntryBody(t *testing.T) {
	cases := []struct {
		name, body, json string
	}{
		{"json", `{"a":1}`, `{"id":"","component":"","rpc":"","body":{"a":1}}`},
		{"not json", "\x00\xff", `{"id":"","component":"","rpc":"","body_base64":"AP8="}`},
		{"empty", "", `{"id":"","component":"","rpc":""}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e contract.BatchEntry
			e.SetBody([]byte(tc.body))
			b, err := json.Marshal(e)
			if err != nil || string(b) != tc.json {
				t.Fatalf("encoded %s, %v; want %s", b, err, tc.json)
			}
			var back contract.BatchEntry
			if err := json.Unmarshal(b, &back); err != nil || string(back.Data()) != tc.body {
				t.Fatalf("decoded %q, %v", back.Data(), err)
			}
		})
	}
}

func TestRetryable(t *testing.T) {
	for status, want := range map[int]bool{200: false, 400: false, 403: false, 404: false, 413: false, 429: true, 500: true, 503: true, 507: true, 521: true, 533: true} {
		if got := contract.Retryable(status); got != want {
			t.Errorf("Retryable(%d) = %v", status, got)
		}
	}
}
