package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/federator"
)

// RemoteStatus is one line of fedctl remotes status: the remote's state
// (from the status bucket that the workers share) and what the workers
// know of it (merged: the latest success, the latest failure, the sum of
// the requests in flight).
type RemoteStatus struct {
	Domain      string    `json:"domain"`
	State       string    `json:"state"` // up, down, or "" when no worker saw it fail
	Since       time.Time `json:"since,omitzero"`
	Reason      string    `json:"reason,omitempty"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastFailure time.Time `json:"last_failure,omitzero"`
	LastLabel   string    `json:"last_label,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	InFlight    int       `json:"in_flight"`
	// Backlog is the notifications waiting for the remote (-1: not known;
	// notifications are not part of this build's status yet).
	Backlog int `json:"backlog"`
}

// remotesStatus is fedctl remotes status.
func remotesStatus(ctx context.Context, cfg Config, out io.Writer, asJSON bool) error {
	nc, err := connect(cfg)
	if err != nil {
		return err
	}
	defer nc.Close()
	byDomain := map[string]*RemoteStatus{}
	get := func(d string) *RemoteStatus {
		s := byDomain[d]
		if s == nil {
			s = &RemoteStatus{Domain: d, Backlog: -1}
			byDomain[d] = s
		}
		return s
	}
	workers := 0
	stats, err := gather(ctx, nc, micro.StatsVerb, contract.ServiceName)
	if err != nil {
		return fmt.Errorf("ask the federators ($SRV.STATS.%s): %w", contract.ServiceName, err)
	}
	for _, raw := range stats {
		var st micro.Stats
		if json.Unmarshal(raw, &st) != nil || st.Metadata[contract.MetaRole] != "federator" {
			continue
		}
		workers++
		for _, ep := range st.Endpoints {
			if ep.Name != federator.EndpointName {
				continue
			}
			var recs []federator.RemoteRecord
			if len(ep.Data) == 0 || json.Unmarshal(ep.Data, &recs) != nil {
				continue
			}
			for _, rec := range recs {
				s := get(rec.Domain)
				s.InFlight += rec.InFlight
				if rec.LastSuccess.After(s.LastSuccess) {
					s.LastSuccess = rec.LastSuccess
				}
				if rec.LastFailure.After(s.LastFailure) {
					s.LastFailure, s.LastLabel, s.LastError = rec.LastFailure, rec.LastLabel, rec.LastError
				}
			}
		}
	}
	if js, err := jetstream.New(nc); err == nil && cfg.Diag.StatusBucket != "" {
		if kv, err := js.KeyValue(ctx, cfg.Diag.StatusBucket); err == nil {
			if lister, err := kv.ListKeys(ctx); err == nil {
				for key := range lister.Keys() {
					e, err := kv.Get(ctx, key)
					if err != nil {
						continue
					}
					var rs federator.RemoteState
					if json.Unmarshal(e.Value(), &rs) != nil || rs.Domain == "" {
						continue
					}
					s := get(rs.Domain)
					s.State, s.Since, s.Reason = rs.State, rs.Since, rs.Reason
				}
				_ = lister.Stop()
			}
		} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return fmt.Errorf("read bucket %s: %w", cfg.Diag.StatusBucket, err)
		}
	}
	list := make([]RemoteStatus, 0, len(byDomain))
	for _, s := range byDomain {
		if s.State == "" && !s.LastFailure.IsZero() || s.State == "" && !s.LastSuccess.IsZero() {
			s.State = federator.StateUp
		}
		list = append(list, *s)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Domain < list[j].Domain })
	if asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"federators": workers, "remotes": list})
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tSTATE\tSINCE\tLAST SUCCESS\tLAST FAILURE\tLABEL\tIN FLIGHT\tBACKLOG")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", s.Domain, s.State, ago(s.Since), ago(s.LastSuccess), ago(s.LastFailure), dash(s.LastLabel), s.InFlight, "-")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "%d remote(s), from %d federator worker(s) and bucket %s\n", len(list), workers, cfg.Diag.StatusBucket)
	for _, s := range list {
		if s.State == federator.StateDown {
			fmt.Fprintf(out, "%s is down since %s: %s\n", s.Domain, s.Since.UTC().Format(time.RFC3339), s.Reason)
		}
	}
	return nil
}

// ago formats a time as "12s ago" ("-" for none).
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
