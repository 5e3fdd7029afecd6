package config

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// ParseLevel parses FED_LOG_LEVEL.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("level %q is not debug, info, warn or error", s)
	}
	return l, nil
}

// Logger returns the process logger: JSON (production) or text, at the
// configured level.
func (c *Common) Logger(w io.Writer) *slog.Logger {
	level, _ := ParseLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
