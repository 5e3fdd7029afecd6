package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// State is the delivery state of a destination whose delivery failed: what
// fedctl shows, and when the next attempt is due. A destination that
// delivers has no state (no key); its state is written at each failed
// attempt and removed at the first success, so that a healthy destination
// costs nothing here.
type State struct {
	Attempts     int       `json:"attempts"`
	NextAttempt  time.Time `json:"next_attempt"`
	LastAttempt  time.Time `json:"last_attempt"`
	FailingSince time.Time `json:"failing_since"`
	LastLabel    string    `json:"last_label,omitempty"`
	LastError    string    `json:"last_error,omitempty"`
}

// stateTTL is how long a state key lives without being written: every
// attempt writes it (at most FED_NOTIFY_RETRY_MAX apart), so only the
// delete markers of recovered destinations and the states of destinations
// nobody attempted for a week expire (the next attempt then starts the
// backoff afresh).
const stateTTL = 7 * 24 * time.Hour

// ErrLeaseHeld is returned by Acquire when another worker holds the lease.
var ErrLeaseHeld = errors.New("notify: lease held by another worker")

// ErrLeaseLost is returned by Refresh and Release when the lease expired
// and may be another worker's now.
var ErrLeaseLost = errors.New("notify: lease lost")

// Store is the destinations' state and leases (two key-value buckets).
type Store struct {
	state, leases jetstream.KeyValue
	leaseTTL      time.Duration
}

// OpenStore opens the state and lease buckets of names. With replicas
// above 0 it creates missing ones with that many replicas (a federator,
// FED_JETSTREAM_REPLICAS); with 0 it only opens existing ones (fedctl). A
// lease expires leaseTTL after it was last refreshed.
func OpenStore(ctx context.Context, js jetstream.JetStream, names Names, leaseTTL time.Duration, replicas int) (*Store, error) {
	open := func(cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
		if replicas > 0 {
			cfg.Replicas = replicas
			return bucket(ctx, js, cfg)
		}
		kv, err := js.KeyValue(ctx, cfg.Bucket)
		if err != nil {
			return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
		}
		return kv, nil
	}
	state, err := open(jetstream.KeyValueConfig{Bucket: names.StateBucket(), Description: "fedbus: delivery state of failing notification destinations",
		History: 1, TTL: stateTTL, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, err
	}
	leases, err := open(jetstream.KeyValueConfig{Bucket: names.LeaseBucket(), Description: "fedbus: which federator worker delivers a destination now",
		History: 1, TTL: leaseTTL, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, err
	}
	if st, err := leases.Status(ctx); err == nil && st.TTL() > 0 {
		leaseTTL = st.TTL() // the bucket's, when it was made with another
	}
	return &Store{state: state, leases: leases, leaseTTL: leaseTTL}, nil
}

// LeaseTTL is the lifetime of a lease that is not refreshed.
func (s *Store) LeaseTTL() time.Duration { return s.leaseTTL }

// State returns the state of domain (zero when it has none).
func (s *Store) State(ctx context.Context, domain string) (State, error) {
	e, err := s.state.Get(ctx, domain)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("state of %s: %w", domain, err)
	}
	return DecodeState(e.Value())
}

// DecodeState decodes a state value.
func DecodeState(v []byte) (State, error) {
	var st State
	if err := json.Unmarshal(v, &st); err != nil {
		return State{}, fmt.Errorf("decode state: %w", err)
	}
	return st, nil
}

// PutState writes the state of domain.
func (s *Store) PutState(ctx context.Context, domain string, st State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if _, err := s.state.Put(ctx, domain, b); err != nil {
		return fmt.Errorf("put state of %s: %w", domain, err)
	}
	return nil
}

// ClearState removes the state of domain (it delivers again).
func (s *Store) ClearState(ctx context.Context, domain string) error {
	if err := s.state.Delete(ctx, domain); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("clear state of %s: %w", domain, err)
	}
	return nil
}

// RetryNow makes the next attempt of domain due now (every worker watching
// the states sees it). It does nothing for a domain without state.
func (s *Store) RetryNow(ctx context.Context, domain string) (bool, error) {
	st, err := s.State(ctx, domain)
	if err != nil || st.Attempts == 0 {
		return false, err
	}
	st.NextAttempt = time.Time{}
	return true, s.PutState(ctx, domain, st)
}

// States returns every destination's state.
func (s *Store) States(ctx context.Context) (map[string]State, error) {
	vals, err := readAll(ctx, s.state)
	if err != nil {
		return nil, fmt.Errorf("list states: %w", err)
	}
	out := make(map[string]State, len(vals))
	for key, v := range vals {
		if st, err := DecodeState(v); err == nil && st.Attempts > 0 {
			out[key] = st
		}
	}
	return out, nil
}

// readAll returns the current value of every key of kv.
func readAll(ctx context.Context, kv jetstream.KeyValue) (map[string][]byte, error) {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, err
	}
	defer func() { _ = w.Stop() }()
	out := make(map[string][]byte)
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("watch closed")
			}
			if e == nil { // the initial values are done
				return out, nil
			}
			out[e.Key()] = e.Value()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// WatchStates watches every state change, from the current values on.
func (s *Store) WatchStates(ctx context.Context) (jetstream.KeyWatcher, error) {
	w, err := s.state.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch states: %w", err)
	}
	return w, nil
}

// Lease is a worker's exclusive right to deliver one destination until it
// expires (Store.LeaseTTL after its last refresh).
type Lease struct {
	s         *Store
	domain    string
	holder    string
	rev       uint64
	refreshed time.Time // local time just before the last write was sent
}

// Acquire takes the lease of domain for holder, or fails with
// ErrLeaseHeld. The key is created only when it does not exist: of several
// workers trying at once, one gets it.
func (s *Store) Acquire(ctx context.Context, domain, holder string) (*Lease, error) {
	now := time.Now()
	rev, err := s.leases.Create(ctx, domain, []byte(holder))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, ErrLeaseHeld
	}
	if err != nil {
		return nil, fmt.Errorf("acquire lease of %s: %w", domain, err)
	}
	return &Lease{s: s, domain: domain, holder: holder, rev: rev, refreshed: now}, nil
}

// Domain is the destination of the lease.
func (l *Lease) Domain() string { return l.domain }

// Remaining is how long the lease surely lasts from now (measured from the
// moment its last refresh was sent; the server's expiry is later).
func (l *Lease) Remaining(now time.Time) time.Duration {
	return l.s.leaseTTL - now.Sub(l.refreshed)
}

// Refresh extends the lease. ErrLeaseLost: it expired (another worker may
// hold it now).
func (l *Lease) Refresh(ctx context.Context) error {
	now := time.Now()
	rev, err := l.s.leases.Update(ctx, l.domain, []byte(l.holder), l.rev)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("refresh lease of %s: %w", l.domain, ErrLeaseLost)
		}
		return fmt.Errorf("refresh lease of %s: %w", l.domain, err)
	}
	l.rev, l.refreshed = rev, now
	return nil
}

// Release gives the lease up, if it is still this worker's.
func (l *Lease) Release(ctx context.Context) error {
	err := l.s.leases.Delete(ctx, l.domain, jetstream.LastRevision(l.rev))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("release lease of %s: %w", l.domain, ErrLeaseLost)
		}
		return fmt.Errorf("release lease of %s: %w", l.domain, err)
	}
	return nil
}

// Holders returns the holder of every lease now held, by domain.
func (s *Store) Holders(ctx context.Context) (map[string]string, error) {
	vals, err := readAll(ctx, s.leases)
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", err)
	}
	out := make(map[string]string, len(vals))
	for key, v := range vals {
		out[key] = string(v)
	}
	return out, nil
}
