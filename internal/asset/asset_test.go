package asset

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestAssetIsDeterministic(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  string
		size int64
	}{
		{"empty", "k", 0},
		{"one byte", "k", 1},
		{"odd size", "3-2-abc", 1<<20 + 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := io.ReadAll(New(tc.key, tc.size))
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(a)) != tc.size {
				t.Fatalf("%d bytes, want %d", len(a), tc.size)
			}
			h := NewHasher()
			if _, err := io.CopyBuffer(h, New(tc.key, tc.size), make([]byte, 1000)); err != nil {
				t.Fatal(err)
			}
			if h.Sum() != Digest(tc.key, tc.size) || h.Size() != tc.size {
				t.Fatal("a second read gives other bytes")
			}
		})
	}
	a, _ := io.ReadAll(New("a", 64))
	b, _ := io.ReadAll(New("b", 64))
	if bytes.Equal(a, b) {
		t.Fatal("two keys give the same bytes")
	}
}

func TestParseRequest(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		ok   bool
	}{
		{"ok", `{"key":"3-2-x","size":5}`, true},
		{"made by Body", string(Body("k", 1<<20)), true},
		{"no key", `{"size":5}`, false},
		{"negative", `{"key":"k","size":-1}`, false},
		{"too large", `{"key":"k","size":2147483648}`, false},
		{"not json", `x`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRequest([]byte(tc.body))
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBadRequest)) {
				t.Fatalf("ParseRequest(%s) = %v", tc.body, err)
			}
		})
	}
}
