package main

import (
	"context"
	"testing"
	"time"
)

// TestDemoFindsAlice runs the demo: the handle search and a 3 MiB asset.
func TestDemoFindsAlice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, "alice", 3<<20, false, false); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, "nobody", 0, false, false); err == nil {
		t.Fatal("an unknown handle must fail the demo")
	}
}
