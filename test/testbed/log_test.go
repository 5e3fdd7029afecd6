package testbed

import (
	"log/slog"
	"sync"
	"testing"
)

// TestLogBuffer writes from several goroutines through a JSON handler and
// decodes every line.
func TestLogBuffer(t *testing.T) {
	var buf LogBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { log.Info("line", "request_id", i) })
	}
	wg.Wait()
	lines, err := buf.JSONLines()
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != n {
		t.Fatalf("%d lines decoded, want %d", len(lines), n)
	}
	for _, l := range lines {
		if l["msg"] != "line" || l["request_id"] == nil {
			t.Fatalf("line %v", l)
		}
	}
	var bad LogBuffer
	if _, err := bad.Write([]byte("not json\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := bad.JSONLines(); err == nil {
		t.Error("a line that is not JSON was decoded")
	}
}
