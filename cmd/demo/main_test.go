package main

import (
	"context"
	"testing"
	"time"
)

func TestDemoFindsAlice(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, "alice", false, false); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, "nobody", false, false); err == nil {
		t.Fatal("an unknown handle must fail the demo")
	}
}
