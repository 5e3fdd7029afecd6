package lookup_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/discovery"
	"github.com/fedbus/fedbus/lookup"
)

func TestFailure(t *testing.T) {
	live := context.Background()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	wrap := func(e error) error { return fmt.Errorf("discover b.example.com: %w", e) }
	tests := []struct {
		name     string
		ctx      context.Context
		side     lookup.Side
		err      error
		want     string
		detailed bool // the message carries the cause's text
	}{
		{"invalid domain", live, lookup.Outbound, wrap(discovery.ErrInvalidDomain), contract.LabelDomainParseError, false},
		{"insecure outbound", live, lookup.Outbound, wrap(discovery.ErrInsecure), contract.LabelDiscoveryFailure, false},
		{"insecure inbound", live, lookup.Inbound, wrap(discovery.ErrInsecure), contract.LabelAuthenticationFailure, false},
		{"deadline", live, lookup.Outbound, wrap(context.DeadlineExceeded), contract.LabelTimeout, false},
		{"cancelled inbound", live, lookup.Inbound, wrap(context.Canceled), contract.LabelTimeout, false},
		{"lookup failed after the deadline, outbound", done, lookup.Outbound, wrap(discovery.ErrLookup), contract.LabelTimeout, false},
		{"lookup failed after the deadline, inbound", done, lookup.Inbound, wrap(discovery.ErrLookup), contract.LabelTimeout, false},
		{"not found outbound", live, lookup.Outbound, wrap(discovery.ErrNotFound), contract.LabelInvalidDomain, true},
		{"not found inbound", live, lookup.Inbound, wrap(discovery.ErrNotFound), contract.LabelInvalidDomain, false},
		{"service unavailable", live, lookup.Outbound, wrap(discovery.ErrServiceUnavailable), contract.LabelInvalidDomain, true},
		{"private target", live, lookup.Outbound, wrap(discovery.ErrPrivateTarget), contract.LabelFederationDenied, true},
		{"lookup failed outbound", live, lookup.Outbound, wrap(discovery.ErrLookup), contract.LabelDiscoveryFailure, true},
		{"lookup failed inbound hides the servers", live, lookup.Inbound, wrap(discovery.ErrLookup), contract.LabelDiscoveryFailure, false},
		{"contract error as it is", live, lookup.Inbound, fmt.Errorf("x: %w", contract.ErrTooManyRequests), contract.LabelTooManyRequests, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := lookup.Failure(tc.ctx, tc.side, "b.example.com", tc.err)
			if e.Label != tc.want || e.Code != contract.StatusOf(tc.want) {
				t.Fatalf("Failure(%v) = %d %s, want %s", tc.err, e.Code, e.Label, tc.want)
			}
			if got := strings.Contains(e.Message, "discover b.example.com:"); got != tc.detailed {
				t.Errorf("message %q carries the cause: %v, want %v", e.Message, got, tc.detailed)
			}
		})
	}
}

func TestExpired(t *testing.T) {
	past, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want bool
	}{
		{"no deadline", context.Background(), false},
		{"deadline passed", past, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := lookup.Expired(tc.ctx); got != tc.want {
				t.Errorf("Expired = %v, want %v", got, tc.want)
			}
		})
	}
	if !errors.Is(past.Err(), context.DeadlineExceeded) {
		t.Fatal("the past deadline's context is not done")
	}
}
