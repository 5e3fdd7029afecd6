package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fedbus/fedbus/contract"
	"github.com/fedbus/fedbus/notify"
)

// NotificationsUsage is the help of fedctl notifications.
const NotificationsUsage = `  fedctl notifications list                               destinations with a backlog or failing, and the stream's fill level
  fedctl notifications retry <domain>                     attempt a failing destination now
  fedctl notifications purge <domain>                     drop every notification waiting for a destination
  fedctl notifications dead list [<domain>] [-n count]    dead letters, oldest first (default 100)
  fedctl notifications dead replay <seq>... | -domain <domain> | -all
                                                          publish dead letters again, at the end of their destination's backlog
`

// notifications runs fedctl notifications ….
func notifications(ctx context.Context, cfg Config, js jetstream.JetStream, args []string, out io.Writer) error {
	subjects, err := contract.NewSubjects(cfg.SubjectPrefix)
	if err != nil {
		return err
	}
	names := notify.Names{Stream: cfg.NotifyStream, Dead: cfg.DeadStream}
	if len(args) == 0 {
		return fmt.Errorf("%w: notifications needs a command", ErrUsage)
	}
	stream, err := js.Stream(ctx, names.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		fmt.Fprintf(out, "stream %s does not exist yet (a federator creates it at start): no notifications\n", names.Stream)
		return nil
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", names.Stream, err)
	}
	store, err := notify.OpenStore(ctx, js, names, 0, 0)
	if err != nil {
		return err
	}
	switch args[0] {
	case "list":
		return listDestinations(ctx, stream, store, js, names, subjects, out)
	case "retry", "purge":
		if len(args) != 2 {
			return fmt.Errorf("%w: notifications %s takes one domain", ErrUsage, args[0])
		}
		domain, err := contract.NormalizeDomain(args[1])
		if err != nil {
			return err
		}
		if args[0] == "purge" {
			n, err := notify.Purge(ctx, stream, store, subjects, domain)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "purged %d notification(s) to %s\n", n, domain)
			return nil
		}
		ok, err := store.RetryNow(ctx, domain)
		if err != nil {
			return err
		}
		if !ok {
			fmt.Fprintf(out, "%s is not failing: its notifications (if any) are being delivered\n", domain)
			return nil
		}
		fmt.Fprintf(out, "%s: next attempt now\n", domain)
		return nil
	case "dead":
		dead, err := js.Stream(ctx, names.Dead)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			fmt.Fprintf(out, "stream %s does not exist yet: no dead letters\n", names.Dead)
			return nil
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", names.Dead, err)
		}
		return deadLetters(ctx, js, dead, subjects, args[1:], out)
	default:
		return fmt.Errorf("%w: unknown command notifications %s", ErrUsage, args[0])
	}
}

// listDestinations prints the destinations with a backlog, a failing state
// or a worker delivering them, and the stream's fill level.
func listDestinations(ctx context.Context, stream jetstream.Stream, store *notify.Store, js jetstream.JetStream, names notify.Names, subjects contract.Subjects, out io.Writer) error {
	list, invalid, err := notify.List(ctx, stream, store, subjects)
	if err != nil {
		return err
	}
	now := time.Now()
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DESTINATION\tBACKLOG\tOLDEST\tATTEMPTS\tNEXT ATTEMPT\tDELIVERING\tLAST ERROR")
	var total uint64
	for _, d := range list {
		total += d.Backlog
		oldest, next, holder, lastErr := "-", "-", "-", "-"
		if !d.Oldest.IsZero() {
			oldest = age(now.Sub(d.Oldest))
		}
		if d.State.Attempts > 0 {
			next = "now"
			if wait := d.State.NextAttempt.Sub(now); wait > 0 {
				next = "in " + age(wait)
			}
			lastErr = contract.Truncate(d.State.LastError, 120)
		}
		if d.Holder != "" {
			holder = d.Holder
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\n", d.Domain, d.Backlog, oldest, d.State.Attempts, next, holder, lastErr)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	info := stream.CachedInfo()
	fill := fmt.Sprintf("%s stored", size(info.State.Bytes))
	if info.Config.MaxBytes > 0 {
		fill = fmt.Sprintf("%s of %s (%d%%) stored; when full, new notifications are refused", size(info.State.Bytes), size(uint64(info.Config.MaxBytes)),
			info.State.Bytes*100/uint64(info.Config.MaxBytes))
	}
	fmt.Fprintf(out, "%d destination(s), %d notification(s) waiting; stream %s: %s\n", len(list), total, names.Stream, fill)
	if len(invalid) > 0 {
		fmt.Fprintf(out, "%d subject(s) name no destination (set aside by the federators as dead letters): %s\n", len(invalid), strings.Join(invalid, " "))
	}
	if dead, err := js.Stream(ctx, names.Dead); err == nil {
		if di := dead.CachedInfo(); di != nil && di.State.Msgs > 0 {
			fmt.Fprintf(out, "%d dead letter(s) in %s: fedctl notifications dead list\n", di.State.Msgs, names.Dead)
		}
	}
	return nil
}

// deadLetters runs fedctl notifications dead ….
func deadLetters(ctx context.Context, js jetstream.JetStream, dead jetstream.Stream, subjects contract.Subjects, args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: notifications dead needs list or replay", ErrUsage)
	}
	fs := flag.NewFlagSet("notifications dead "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	limit := fs.Int("n", 100, "dead letters to list (0: all)")
	domainFlag := fs.String("domain", "", "replay the dead letters of this destination")
	all := fs.Bool("all", false, "replay every dead letter")
	rest, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	switch args[0] {
	case "list":
		if len(rest) > 1 {
			return fmt.Errorf("%w: notifications dead list takes at most one domain", ErrUsage)
		}
		domain := ""
		if len(rest) == 1 {
			if domain, err = contract.NormalizeDomain(rest[0]); err != nil {
				return err
			}
		}
		list, err := notify.ListDead(ctx, dead, subjects, domain, *limit)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tSET ASIDE\tNOTIFICATION\tID\tATTEMPTS\tREASON")
		for _, d := range list {
			reason := d.Label
			if d.Error != nil {
				reason = d.Error.Label + ": " + d.Error.Message
				if d.Error.Inner != nil {
					reason += " (remote " + strconv.Itoa(d.Error.Inner.Code) + " " + d.Error.Inner.Label + ": " + d.Error.Inner.Message + ")"
				}
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\n", d.Seq, d.Time.UTC().Format(time.RFC3339), d.Subject, d.ID, d.Attempts, contract.Truncate(reason, 200))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(out, "%d dead letter(s) shown\n", len(list))
		return nil
	case "replay":
		var seqs []uint64
		switch {
		case *all || *domainFlag != "":
			if len(rest) > 0 || (*all && *domainFlag != "") {
				return fmt.Errorf("%w: replay takes sequences, -domain or -all", ErrUsage)
			}
			domain := ""
			if *domainFlag != "" {
				if domain, err = contract.NormalizeDomain(*domainFlag); err != nil {
					return err
				}
			}
			list, err := notify.ListDead(ctx, dead, subjects, domain, 0)
			if err != nil {
				return err
			}
			for _, d := range list {
				seqs = append(seqs, d.Seq)
			}
		case len(rest) > 0:
			for _, a := range rest {
				n, err := strconv.ParseUint(a, 10, 64)
				if err != nil || n == 0 {
					return fmt.Errorf("%w: %q is not a dead letter sequence", ErrUsage, a)
				}
				seqs = append(seqs, n)
			}
		default:
			return fmt.Errorf("%w: replay takes sequences, -domain or -all", ErrUsage)
		}
		for _, seq := range seqs {
			d, err := notify.Replay(ctx, js, dead, subjects, seq)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "replayed %d: %s (id %s)\n", seq, d.Subject, d.ID)
		}
		fmt.Fprintf(out, "%d dead letter(s) replayed\n", len(seqs))
		return nil
	default:
		return fmt.Errorf("%w: unknown command notifications dead %s", ErrUsage, args[0])
	}
}

// parseInterleaved parses flags that may come before or after the
// positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return rest, nil
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// age formats a duration for people: 42s, 3m12s, 5h3m, 2d4h.
func age(d time.Duration) string {
	switch {
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	default:
		days := d / (24 * time.Hour)
		return fmt.Sprintf("%dd%dh", days, (d-days*24*time.Hour)/time.Hour)
	}
}

// size formats bytes for people.
func size(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%d B", n)
	}
}
