package federator

import (
	"strings"
	"testing"
)

func TestRemoteLimiter(t *testing.T) {
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
			l := newRemoteLimiter(tc.max)
			for i := range tc.takes {
				if got := l.acquire("b.example.com"); got != tc.want[i] {
					t.Fatalf("acquire %d = %v, want %v", i, got, tc.want[i])
				}
			}
			if !l.acquire("c.example.com") {
				t.Fatal("another domain is limited too")
			}
		})
	}
	t.Run("release frees a slot and the entry", func(t *testing.T) {
		l := newRemoteLimiter(1)
		if !l.acquire("b.example.com") || l.acquire("b.example.com") {
			t.Fatal("limit of one not applied")
		}
		l.release("b.example.com")
		if len(l.inFlight) != 0 {
			t.Fatalf("entry left after release: %v", l.inFlight)
		}
		if !l.acquire("b.example.com") {
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
