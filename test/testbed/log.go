package testbed

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
)

// LogBuffer is a destination for a slog handler that is safe for the
// concurrent writes of a logger shared by goroutines. The zero value is
// ready to use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// JSONLines decodes the lines written so far by a slog.JSONHandler, one
// map per line.
func (b *LogBuffer) JSONLines() ([]map[string]any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for line := range bytes.Lines(b.buf.Bytes()) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, fmt.Errorf("testbed: log line %q: %w", line, err)
		}
		out = append(out, m)
	}
	return out, nil
}
