package tlsconf

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Watch checks the files every interval until ctx ends and reloads them
// when their content changed. A file that cannot be used keeps the
// previous material in service and is logged once per broken content.
func (s *Store) Watch(ctx context.Context, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := s.reload()
		switch {
		case err == nil:
			lastErr = ""
			log.Info("certificates reloaded", "serial", s.Leaf().SerialNumber.String(), "not_after", s.Leaf().NotAfter)
		case errors.Is(err, errUnchanged):
		case err.Error() != lastErr:
			lastErr = err.Error()
			log.Error("certificate reload failed, keeping the previous certificate", "err", err)
		}
	}
}
