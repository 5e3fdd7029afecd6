package notify

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/contract"
)

// Backlog returns how many notifications the outbound stream holds per
// destination domain, and the subjects it holds that name no destination
// (a token that breaks its rule, or a domain not in its canonical form:
// published around the bus client; the federator sets them aside). It
// costs one stream info request listing the stream's subjects.
func Backlog(ctx context.Context, stream jetstream.Stream, subjects contract.Subjects) (map[string]uint64, []string, error) {
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subjects.NotifyAll()))
	if err != nil {
		return nil, nil, fmt.Errorf("backlog: %w", err)
	}
	counts := make(map[string]uint64)
	var invalid []string
	for subject, n := range info.State.Subjects {
		domain, ok := Destination(subjects, subject)
		if !ok {
			invalid = append(invalid, subject)
			continue
		}
		counts[domain] += n
	}
	sort.Strings(invalid)
	return counts, invalid, nil
}

// Destination returns the destination domain of a notification subject,
// and false when the subject is not one that Subjects.Notify builds (the
// per-destination consumers would not see it, or it breaks a token rule).
func Destination(subjects contract.Subjects, subject string) (string, bool) {
	r, err := subjects.ParseNotify(subject)
	if err != nil {
		return "", false
	}
	if canonical, err := subjects.Notify(r.Component, r.RPC, r.Domain); err != nil || canonical != subject {
		return "", false
	}
	return r.Domain, true
}

// Oldest returns the oldest notification of domain in the stream
// (jetstream.ErrMsgNotFound when there is none).
func Oldest(ctx context.Context, stream jetstream.Stream, subjects contract.Subjects, domain string) (*jetstream.RawStreamMsg, error) {
	filter, err := subjects.NotifyDomain(domain)
	if err != nil {
		return nil, err
	}
	return stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(filter))
}

// DestinationInfo is what fedctl shows of one destination.
type DestinationInfo struct {
	Domain  string
	Backlog uint64
	// Oldest is when its oldest notification was stored (zero when it
	// could not be read).
	Oldest time.Time
	// State is zero while it delivers.
	State State
	// Holder is the worker that delivers it now ("" when none).
	Holder string
}

// List returns every destination with a backlog, a failing state or a
// holder, sorted by domain, and the subjects that name no destination.
func List(ctx context.Context, stream jetstream.Stream, store *Store, subjects contract.Subjects) ([]DestinationInfo, []string, error) {
	counts, invalid, err := Backlog(ctx, stream, subjects)
	if err != nil {
		return nil, nil, err
	}
	states, err := store.States(ctx)
	if err != nil {
		return nil, nil, err
	}
	holders, err := store.Holders(ctx)
	if err != nil {
		return nil, nil, err
	}
	byDomain := make(map[string]*DestinationInfo)
	get := func(d string) *DestinationInfo {
		if byDomain[d] == nil {
			byDomain[d] = &DestinationInfo{Domain: d}
		}
		return byDomain[d]
	}
	for d, n := range counts {
		get(d).Backlog = n
	}
	for d, st := range states {
		get(d).State = st
	}
	for d, h := range holders {
		get(d).Holder = h
	}
	out := make([]DestinationInfo, 0, len(byDomain))
	for _, di := range byDomain {
		out = append(out, *di)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	// The oldest notification of each, 16 lookups at a time.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range out {
		if out[i].Backlog == 0 {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(di *DestinationInfo) {
			defer func() { <-sem; wg.Done() }()
			if m, err := Oldest(ctx, stream, subjects, di.Domain); err == nil {
				di.Oldest = m.Time
			}
		}(&out[i])
	}
	wg.Wait()
	return out, invalid, nil
}

// Purge removes every notification to domain from the stream and its
// state; it returns how many were removed. The notifications are gone: a
// worker delivering the destination now may still deliver the batch it
// holds.
func Purge(ctx context.Context, stream jetstream.Stream, store *Store, subjects contract.Subjects, domain string) (uint64, error) {
	filter, err := subjects.NotifyDomain(domain)
	if err != nil {
		return 0, err
	}
	before, _, err := Backlog(ctx, stream, subjects)
	if err != nil {
		return 0, err
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(filter)); err != nil {
		return 0, fmt.Errorf("purge %s: %w", domain, err)
	}
	if err := store.ClearState(ctx, domain); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return before[domain], err
	}
	return before[domain], nil
}
