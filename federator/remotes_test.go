package federator

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fedbus/fedbus/contract"
)

func TestRemotesInFlightLimit(t *testing.T) {
	cases := []struct {
		name  string
		max   int
		takes int
		want  []bool
	}{
		{name: "no limit", max: 0, takes: 3, want: []bool{true, true, true}},
		{name: "limit two", max: 2, takes: 3, want: []bool{true, true, false}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newRemotes(tc.max, maxWaits, time.Now)
			for i := range tc.takes {
				_, err := l.acquire("b.example.com")
				if got := err == nil; got != tc.want[i] {
					t.Fatalf("acquire %d = %v, want %v", i, err, tc.want[i])
				}
				if err != nil && !errors.Is(err, contract.ErrTooManyRequests) {
					t.Fatalf("acquire %d: %v, want too-many-requests", i, err)
				}
			}
			if _, err := l.acquire("c.example.com"); err != nil {
				t.Fatal("another domain is limited too")
			}
		})
	}
	t.Run("release frees a slot and the entry", func(t *testing.T) {
		l := newRemotes(1, maxWaits, time.Now)
		rec, err := l.acquire("b.example.com")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.acquire("b.example.com"); err == nil {
			t.Fatal("limit of one not applied")
		}
		l.release(rec)
		if n := l.len(); n != 0 {
			t.Fatalf("%d records left after release", n)
		}
		if _, err := l.acquire("b.example.com"); err != nil {
			t.Fatal("slot not freed")
		}
	})
}

func TestConfigValidate(t *testing.T) {
	c := Config{MaxInFlight: 0, MaxPerRemote: -1, IdleConnTimeout: 0, MaxResponseBytes: 0}
	err := c.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"FED_DOMAIN", "FED_MAX_IN_FLIGHT must", "FED_MAX_IN_FLIGHT_PER_REMOTE", "FED_IDLE_CONN_TIMEOUT", "FED_MAX_RESPONSE_BYTES"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}
