package notify

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Marks are the receiving side's memory of what it stored from fedbus
// senders, beyond the inbox stream's duplicate window. A fedbus sender
// numbers the notifications of each of its destinations in one sequence
// space, its epoch (Fedbus-Notification-Epoch: the creation time of its
// notification stream and the destination domain): increasing in publish
// order (Fedbus-Notification-Seq), and it sends them in that order, one
// request at a time. So a notification of an origin and epoch whose
// sequence is at or below the highest one stored (the mark) was stored
// already: it is answered as a duplicate however long after the first time
// it comes again.
//
// The marks are a key-value bucket, one key per origin and epoch
// (<origin>/<epoch>): in practice one per remote backend and domain of
// ours it addresses. Keys not written for marksTTL expire; the bucket
// holds at most marksMaxBytes (when full, marks are not advanced and the
// duplicate window alone applies, which the ingress logs).
type Marks struct {
	kv jetstream.KeyValue
}

// Limits of the marks bucket.
const (
	marksTTL      = 90 * 24 * time.Hour
	marksMaxBytes = 64 << 20
	maxEpochLen   = 300
)

// ValidEpoch reports whether epoch can key a mark: 1 to 300 characters of
// [A-Za-z0-9._-]. A notification with any other epoch relies on the
// duplicate window alone.
func ValidEpoch(epoch string) bool {
	if len(epoch) == 0 || len(epoch) > maxEpochLen {
		return false
	}
	for i := 0; i < len(epoch); i++ {
		c := epoch[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Epoch is the epoch a fedbus sender gives the notifications of one
// destination: the creation time of its stream (Unix nanoseconds) and the
// destination domain.
func Epoch(streamCreated time.Time, destination string) string {
	return strconv.FormatInt(streamCreated.UnixNano(), 10) + "." + destination
}

// OpenMarks opens the marks of the inbound stream inbox, creating the
// bucket when missing.
func OpenMarks(ctx context.Context, js jetstream.JetStream, inbox string, replicas int) (*Marks, error) {
	kv, err := bucket(ctx, js, jetstream.KeyValueConfig{Bucket: MarksBucket(inbox),
		Description: "fedbus: highest notification sequence stored per origin and sender epoch",
		History:     1, TTL: marksTTL, MaxBytes: marksMaxBytes, Storage: jetstream.FileStorage, Replicas: max(replicas, 1)})
	if err != nil {
		return nil, err
	}
	return &Marks{kv: kv}, nil
}

func markKey(origin, epoch string) string { return origin + "/" + epoch }

// Get returns the mark of origin and epoch (0 when there is none, or the
// epoch cannot have one).
func (m *Marks) Get(ctx context.Context, origin, epoch string) (uint64, error) {
	if !ValidEpoch(epoch) {
		return 0, nil
	}
	e, err := m.kv.Get(ctx, markKey(origin, epoch))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("mark of %s: %w", origin, err)
	}
	n, err := strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return 0, nil // unreadable: as if there were none (the window still applies)
	}
	return n, nil
}

// Advance raises the mark of origin and epoch to seq (a higher one is
// kept). Concurrent writers (two ingress instances) are ordered by
// compare-and-set.
func (m *Marks) Advance(ctx context.Context, origin, epoch string, seq uint64) error {
	if !ValidEpoch(epoch) || seq == 0 {
		return nil
	}
	key, val := markKey(origin, epoch), []byte(strconv.FormatUint(seq, 10))
	for range 8 {
		e, err := m.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if _, err := m.kv.Create(ctx, key, val); err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
				return wrapMark(origin, err)
			}
			continue
		case err != nil:
			return wrapMark(origin, err)
		}
		if cur, err := strconv.ParseUint(string(e.Value()), 10, 64); err == nil && cur >= seq {
			return nil
		}
		if _, err := m.kv.Update(ctx, key, val, e.Revision()); err == nil || !errors.Is(err, jetstream.ErrKeyExists) {
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
