package notify

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// Mark is the receiving side's memory of one origin: the highest sequence
// (Fedbus-Notification-Seq) it stored from the origin's notification
// stream of that epoch (Fedbus-Notification-Epoch). A fedbus sender's
// sequences grow in publish order per destination, and it sends a
// destination's notifications in that order, so a notification of the
// same epoch at or below the mark was stored already: it is answered as a
// duplicate however long after the first time it comes again, beyond the
// inbox stream's duplicate window.
type Mark struct {
	Epoch string
	Seq   uint64
}

// Covers reports whether a notification of epoch and seq is at or below
// the mark (stored already). A notification without a sequence or epoch
// never is (it relies on the duplicate window alone).
func (m Mark) Covers(epoch string, seq uint64) bool {
	return epoch != "" && seq > 0 && epoch == m.Epoch && seq <= m.Seq
}

func (m Mark) encode() []byte { return []byte(strconv.FormatUint(m.Seq, 10) + " " + m.Epoch) }

func decodeMark(b []byte) (Mark, error) {
	seq, epoch, ok := strings.Cut(string(b), " ")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok || err != nil {
		return Mark{}, fmt.Errorf("decode mark %q", b)
	}
	return Mark{Epoch: epoch, Seq: n}, nil
}

// Marks is the key-value bucket of the marks, one key per origin domain.
type Marks struct {
	kv jetstream.KeyValue
}

// OpenMarks opens the marks of the inbound stream inbox, creating the
// bucket when missing.
func OpenMarks(ctx context.Context, js jetstream.JetStream, inbox string, replicas int) (*Marks, error) {
	kv, err := bucket(ctx, js, jetstream.KeyValueConfig{Bucket: MarksBucket(inbox),
		Description: "fedbus: highest notification sequence stored per origin",
		History:     1, Storage: jetstream.FileStorage, Replicas: max(replicas, 1)})
	if err != nil {
		return nil, err
	}
	return &Marks{kv: kv}, nil
}

// Get returns the mark of origin (zero when there is none).
func (m *Marks) Get(ctx context.Context, origin string) (Mark, error) {
	e, err := m.kv.Get(ctx, origin)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Mark{}, nil
	}
	if err != nil {
		return Mark{}, fmt.Errorf("mark of %s: %w", origin, err)
	}
	mk, err := decodeMark(e.Value())
	if err != nil {
		return Mark{}, nil // unreadable: as if there were none (the window still applies)
	}
	return mk, nil
}

// Advance raises the mark of origin to to: a mark of another epoch is
// replaced, a higher one of the same epoch kept. Concurrent writers (two
// ingress instances) are ordered by compare-and-set.
func (m *Marks) Advance(ctx context.Context, origin string, to Mark) error {
	for range 8 {
		e, err := m.kv.Get(ctx, origin)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if _, err := m.kv.Create(ctx, origin, to.encode()); err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
				return wrapMark(origin, err)
			}
			continue
		case err != nil:
			return wrapMark(origin, err)
		}
		cur, derr := decodeMark(e.Value())
		if derr == nil && cur.Epoch == to.Epoch && cur.Seq >= to.Seq {
			return nil
		}
		if _, err := m.kv.Update(ctx, origin, to.encode(), e.Revision()); err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
			return wrapMark(origin, err)
		}
	}
	return fmt.Errorf("advance mark of %s: too many concurrent writers", origin)
}

func wrapMark(origin string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("advance mark of %s: %w", origin, err)
}
