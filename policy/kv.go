package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fedbus/fedbus/contract"
	"github.com/nats-io/nats.go/jetstream"
)

// Key layout of the bucket.
const (
	remotePrefix = "remotes."
	defaultsKey  = "defaults"
)

// ErrBadEntry is returned for a bucket entry that cannot be used.
var ErrBadEntry = errors.New("invalid federation config entry")

// maxEntryBytes bounds one bucket value.
const maxEntryBytes = 64 << 10

// RemoteKey returns the bucket key of a remote domain.
func RemoteKey(domain string) (string, error) {
	d, err := contract.NormalizeDomain(domain)
	if err != nil {
		return "", err
	}
	return remotePrefix + d, nil
}

// Entry is one parsed bucket entry.
type Entry struct {
	Domain   string // set for a remote; empty for the defaults
	Remote   Remote
	Defaults Rules
}

// ParseEntry parses a bucket key and value. Keys are "remotes.<domain>" and
// "defaults"; values are JSON: {"rules": {"<component>": ["<rpc>" | "*"]}}
// (an empty value means no rules of its own).
func ParseEntry(key string, value []byte) (Entry, error) {
	if len(value) > maxEntryBytes {
		return Entry{}, fmt.Errorf("parse %q: value over %d bytes: %w", key, maxEntryBytes, ErrBadEntry)
	}
	var r Remote
	if len(bytes.TrimSpace(value)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(value))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			return Entry{}, fmt.Errorf("parse %q: %v: %w", key, err, ErrBadEntry)
		}
		if err := r.Rules.Validate(); err != nil {
			return Entry{}, fmt.Errorf("parse %q: %w", key, err)
		}
	}
	if key == defaultsKey {
		return Entry{Defaults: r.Rules}, nil
	}
	name, ok := strings.CutPrefix(key, remotePrefix)
	if !ok {
		return Entry{}, fmt.Errorf("parse %q: unknown key: %w", key, ErrBadEntry)
	}
	d, err := contract.NormalizeDomain(name)
	if err != nil || d != name {
		return Entry{}, fmt.Errorf("parse %q: not a canonical domain: %w", key, ErrBadEntry)
	}
	return Entry{Domain: d, Remote: r}, nil
}

// Store manages the bucket (used by fedctl).
type Store struct {
	js jetstream.JetStream
	kv jetstream.KeyValue
}

// OpenStore opens the bucket. With replicas above 0 it creates a missing
// bucket with that many replicas (FED_JETSTREAM_REPLICAS: 3 on a NATS
// cluster, so that the config survives the loss of a server); with 0 it
// only opens an existing one (jetstream.ErrBucketNotFound otherwise).
func OpenStore(ctx context.Context, js jetstream.JetStream, bucket string, replicas int) (*Store, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) && replicas > 0 {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Description: "fedbus federation config", History: 5, Replicas: replicas})
		if err != nil && replicas > 1 {
			err = fmt.Errorf("%w (with %d replicas: the NATS cluster needs at least %d JetStream servers)", err, replicas, replicas)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	return &Store{js: js, kv: kv}, nil
}

// Replicate sets the bucket's replica count to replicas (a bucket made
// before a single server became a cluster is moved to 3 replicas this
// way) and returns the count it had.
func (s *Store) Replicate(ctx context.Context, replicas int) (int, error) {
	st, err := s.kv.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("replicate bucket: %w", err)
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return 0, fmt.Errorf("replicate bucket: status of type %T has no stream", st)
	}
	info := bs.StreamInfo()
	had := info.Config.Replicas
	if had == replicas {
		return had, nil
	}
	cfg := info.Config
	cfg.Replicas = replicas
	stream, err := s.js.UpdateStream(ctx, cfg)
	if err != nil {
		return had, fmt.Errorf("replicate bucket %s: %d to %d replicas: %w", s.kv.Bucket(), had, replicas, err)
	}
	// Writes wait for the new replicas to catch up with the leader.
	for {
		info, err := stream.Info(ctx)
		if err == nil && caughtUp(info, replicas) {
			return had, nil
		}
		select {
		case <-ctx.Done():
			return had, fmt.Errorf("replicate bucket %s: waiting for %d current replicas: %w", s.kv.Bucket(), replicas, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// caughtUp reports whether a stream has a leader and replicas-1 current
// followers.
func caughtUp(info *jetstream.StreamInfo, replicas int) bool {
	if replicas == 1 {
		return true
	}
	if info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != replicas-1 {
		return false
	}
	for _, p := range info.Cluster.Replicas {
		if !p.Current {
			return false
		}
	}
	return true
}

// KV returns the underlying bucket.
func (s *Store) KV() jetstream.KeyValue { return s.kv }

// Add stores (or replaces) a remote domain with its rules.
func (s *Store) Add(ctx context.Context, domain string, r Remote) (string, error) {
	if err := r.Rules.Validate(); err != nil {
		return "", fmt.Errorf("add %s: %w", domain, err)
	}
	key, err := RemoteKey(domain)
	if err != nil {
		return "", fmt.Errorf("add %s: %w", domain, err)
	}
	val, err := json.Marshal(r)
	if err != nil {
		return "", fmt.Errorf("add %s: %w", domain, err)
	}
	if _, err := s.kv.Put(ctx, key, val); err != nil {
		return "", fmt.Errorf("add %s: %w", domain, err)
	}
	return strings.TrimPrefix(key, remotePrefix), nil
}

// Remove deletes a remote domain; removing an absent one is not an error.
func (s *Store) Remove(ctx context.Context, domain string) (string, error) {
	key, err := RemoteKey(domain)
	if err != nil {
		return "", fmt.Errorf("remove %s: %w", domain, err)
	}
	if err := s.kv.Delete(ctx, key); err != nil {
		return "", fmt.Errorf("remove %s: %w", domain, err)
	}
	return strings.TrimPrefix(key, remotePrefix), nil
}

// SetDefaults stores the default rules (nil: everything allowed).
func (s *Store) SetDefaults(ctx context.Context, rules Rules) error {
	if err := rules.Validate(); err != nil {
		return fmt.Errorf("set defaults: %w", err)
	}
	val, err := json.Marshal(Remote{Rules: rules})
	if err != nil {
		return fmt.Errorf("set defaults: %w", err)
	}
	if _, err := s.kv.Put(ctx, defaultsKey, val); err != nil {
		return fmt.Errorf("set defaults: %w", err)
	}
	return nil
}

// List returns the remote domains (sorted) and the default rules.
func (s *Store) List(ctx context.Context) ([]Entry, Rules, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("list: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	var out []Entry
	var defaults Rules
	for key := range lister.Keys() {
		e, err := s.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("list: get %s: %w", key, err)
		}
		pe, err := ParseEntry(key, e.Value())
		if err != nil {
			return nil, nil, fmt.Errorf("list: %w", err)
		}
		if pe.Domain == "" {
			defaults = pe.Defaults
			continue
		}
		out = append(out, pe)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out, defaults, nil
}

// Watcher applies the bucket to a Policy: the whole content first, then
// every change as it happens.
type Watcher struct {
	kv      jetstream.KeyValue
	p       *Policy
	log     *slog.Logger
	loaded  chan struct{}
	once    sync.Once
	restart chan struct{} // Reload
}

// errReload ends a watch that Reload asked to start over.
var errReload = errors.New("reload")

// NewWatcher returns a watcher of kv for p.
func NewWatcher(kv jetstream.KeyValue, p *Policy, log *slog.Logger) *Watcher {
	return &Watcher{kv: kv, p: p, log: log, loaded: make(chan struct{}), restart: make(chan struct{}, 1)}
}

// Loaded is closed once the bucket's initial content has been applied.
func (w *Watcher) Loaded() <-chan struct{} { return w.loaded }

// Reload makes the running watch start over: the whole bucket is read and
// applied again (SIGHUP). It does not wait.
func (w *Watcher) Reload() {
	select {
	case w.restart <- struct{}{}:
	default: // a reload is pending already
	}
}

// Run watches until ctx ends. Invalid entries are logged and skipped (the
// others still apply). When the watch breaks (e.g. the bucket was deleted)
// it is restarted after a second; Reload restarts it at once.
func (w *Watcher) Run(ctx context.Context) error {
	const retry = time.Second
	for {
		err := w.watchOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errReload) {
			w.log.Info("federation config reloading", "bucket", w.kv.Bucket())
			continue
		}
		w.log.Warn("federation config watch ended, restarting", "bucket", w.kv.Bucket(), "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}

func (w *Watcher) watchOnce(ctx context.Context) error {
	kw, err := w.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", w.kv.Bucket(), err)
	}
	defer func() { _ = kw.Stop() }()
	remotes := map[string]Remote{}
	var defaults Rules
	initial := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w.restart:
			return errReload
		case e, ok := <-kw.Updates():
			if !ok {
				return fmt.Errorf("watch %s: updates closed", w.kv.Bucket())
			}
			if e == nil { // the initial values are all in
				initial = false
				w.p.SetDynamic(remotes, defaults)
				w.log.Info("federation config loaded", "bucket", w.kv.Bucket(), "remotes", len(remotes))
				w.once.Do(func() { close(w.loaded) })
				continue
			}
			applyEntry(e, remotes, &defaults, w.log)
			if !initial {
				w.p.SetDynamic(remotes, defaults)
			}
		}
	}
}

func applyEntry(e jetstream.KeyValueEntry, remotes map[string]Remote, defaults *Rules, log *slog.Logger) {
	deleted := e.Operation() == jetstream.KeyValueDelete || e.Operation() == jetstream.KeyValuePurge
	if deleted {
		if e.Key() == defaultsKey {
			*defaults = nil
		} else {
			delete(remotes, strings.TrimPrefix(e.Key(), remotePrefix))
		}
		log.Info("federation config entry removed", "key", e.Key())
		return
	}
	pe, err := ParseEntry(e.Key(), e.Value())
	if err != nil {
		log.Error("federation config entry ignored", "key", e.Key(), "err", err)
		return
	}
	if pe.Domain == "" {
		*defaults = pe.Defaults
	} else {
		remotes[pe.Domain] = pe.Remote
	}
	log.Info("federation config entry applied", "key", e.Key())
}
