package iox

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadAllSized(t *testing.T) {
	big := strings.Repeat("x", 300<<10)
	cases := []struct {
		name     string
		body     string
		declared int64
	}{
		{name: "unknown length", body: "hello", declared: -1},
		{name: "exact length", body: "hello", declared: 5},
		{name: "declared too short", body: "hello world", declared: 5},
		{name: "declared too long", body: "hi", declared: 100},
		{name: "larger than the preallocation", body: big, declared: int64(len(big))},
		{name: "empty", body: "", declared: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadAllSized(iotest.OneByteReader(strings.NewReader(tc.body)), tc.declared)
			if err != nil || string(got) != tc.body {
				t.Fatalf("got %d bytes, %v; want %d bytes", len(got), err, len(tc.body))
			}
		})
	}
	t.Run("error", func(t *testing.T) {
		boom := errors.New("boom")
		_, err := ReadAllSized(io.MultiReader(bytes.NewReader([]byte("ab")), iotest.ErrReader(boom)), 10)
		if !errors.Is(err, boom) {
			t.Fatalf("got %v", err)
		}
	})
}
