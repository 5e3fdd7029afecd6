// Package notify holds what the notifications of contract section 6 keep in
// JetStream, in one place for the federator (which delivers them), the
// ingress (which receives them) and fedctl (which shows and manages them):
//
//   - the streams: the outbound notification stream (fed.notify.>, work
//     queue: a notification is kept until it is delivered or set aside),
//     the dead-letter stream (fed.dead.>) and the inbound stream
//     (fed.inbox.>, work queue: kept until the component acknowledged it);
//   - the destinations' delivery state (attempts, next attempt, last
//     error) and their leases (which federator worker delivers a
//     destination now), two key-value buckets;
//   - the receiving side's marks (the highest sequence stored per origin);
//   - reading the backlog of each destination, and the dead letters.
//
// It knows nothing of HTTP or of how notifications are delivered.
package notify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/contract"
)

// Names are the JetStream names of one backend's notification path.
type Names struct {
	// Stream is the outbound notification stream (FED_NOTIFY_STREAM).
	Stream string
	// Dead is the dead-letter stream (FED_NOTIFY_DEAD_STREAM).
	Dead string
}

// ValidName reports whether s can name a stream and, with a suffix such
// as _STATE, its buckets: [A-Za-z0-9_-]{1,128} (the rpc token's rule).
func ValidName(s string) bool { return contract.ValidRPC(s) }

// StateBucket is the key-value bucket of the destinations' delivery state:
// <Stream>_STATE.
func (n Names) StateBucket() string { return n.Stream + "_STATE" }

// LeaseBucket is the key-value bucket of the destinations' leases:
// <Stream>_LEASES.
func (n Names) LeaseBucket() string { return n.Stream + "_LEASES" }

// MarksBucket is the key-value bucket of the receiving side's marks for
// the inbound stream inbox: <inbox>_MARKS.
func MarksBucket(inbox string) string { return inbox + "_MARKS" }

// Limits are the limits of a stream; zero means none (the server's).
type Limits struct {
	MaxBytes   int64
	MaxMsgs    int64
	MaxMsgSize int32
	MaxAge     time.Duration
	// Duplicates is the deduplication window (Nats-Msg-Id).
	Duplicates time.Duration
	Replicas   int
}

// ErrIncompatible is returned by the Ensure functions when a stream of the
// name exists but cannot serve (other subjects, another retention).
var ErrIncompatible = errors.New("notify: existing stream is incompatible")

// OutboundConfig is the configuration of the outbound notification stream:
// fed.notify.>, file storage, work-queue retention (a notification leaves
// the stream when it was delivered or set aside, never for a limit),
// discard new (a full stream refuses new notifications), direct get (for
// fedctl), and the headers of every stored notification republished on
// fed.notified.> (the federators' wake-up call).
func OutboundConfig(name string, subjects contract.Subjects, l Limits) jetstream.StreamConfig {
	cfg := workQueue(name, "fedbus: outbound notifications (contract section 6), kept until delivered or dead-lettered", subjects.NotifyAll(), l)
	cfg.RePublish = &jetstream.RePublish{Source: subjects.NotifyAll(), Destination: subjects.NotifiedAll(), HeadersOnly: true}
	return cfg
}

// InboxConfig is the configuration of the inbound notification stream:
// fed.inbox.>, file storage, work-queue retention (a notification leaves
// it when its component acknowledged it), discard new (a full inbox
// refuses: the ingress answers 507 and the sender tries again later), and
// the deduplication window of Nats-Msg-Id <origin>/<ce-id>.
func InboxConfig(name string, subjects contract.Subjects, l Limits) jetstream.StreamConfig {
	return workQueue(name, "fedbus: inbound notifications (contract section 6), kept until their component acknowledged them", subjects.InboxAll(), l)
}

// workQueue is the configuration of a notification stream holding subject.
func workQueue(name, description, subject string, l Limits) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: description,
		Subjects:    []string{subject},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
		MaxBytes:    orNone(l.MaxBytes),
		MaxMsgs:     orNone(l.MaxMsgs),
		MaxMsgSize:  orNone32(l.MaxMsgSize),
		Duplicates:  l.Duplicates,
		Replicas:    max(l.Replicas, 1),
		AllowDirect: true,
	}
}

// DeadConfig is the configuration of the dead-letter stream: fed.dead.>,
// file storage, kept for MaxAge and within MaxBytes (the oldest dead
// letters go first: they were set aside already).
func DeadConfig(name string, subjects contract.Subjects, l Limits) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: "fedbus: dead letters, notifications set aside with their reason",
		Subjects:    []string{subjects.DeadAll()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxBytes:    orNone(l.MaxBytes),
		MaxMsgs:     orNone(l.MaxMsgs),
		MaxAge:      l.MaxAge,
		Duplicates:  l.Duplicates,
		Replicas:    max(l.Replicas, 1),
		AllowDirect: true,
	}
}

func orNone(v int64) int64 {
	if v <= 0 {
		return -1
	}
	return v
}

func orNone32(v int32) int32 {
	if v <= 0 {
		return -1
	}
	return v
}

// Ensure returns the stream of cfg.Name, creating it with cfg when it
// does not exist. An existing stream is used as it is (its limits are the
// operator's), unless its subjects or retention differ from cfg's:
// ErrIncompatible. created reports whether Ensure made it.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (s jetstream.Stream, created bool, err error) {
	s, err = js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, cfg)
		if err == nil {
			return s, true, nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, false, fmt.Errorf("create stream %s: %w", cfg.Name, err)
		}
		// Created meanwhile by another process, maybe with other limits.
		s, err = js.Stream(ctx, cfg.Name)
	}
	if err != nil {
		return nil, false, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	got := s.CachedInfo().Config
	if !slices.Equal(got.Subjects, cfg.Subjects) || got.Retention != cfg.Retention {
		return nil, false, fmt.Errorf("%w: stream %s holds %v with %s retention; fedbus needs %v with %s retention",
			ErrIncompatible, cfg.Name, got.Subjects, got.Retention, cfg.Subjects, cfg.Retention)
	}
	return s, false, nil
}

// bucket opens the key-value bucket cfg.Bucket, creating it when missing.
func bucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}
