package ctl

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/fedbus/fedbus/internal/testbed"
)

func TestCommands(t *testing.T) {
	srv, err := testbed.StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	cfg := Config{NATSURL: srv.ClientURL(), Bucket: "fedbus"}
	steps := []struct {
		name string
		args string
		want []string // substrings of the output
		err  error
	}{
		{name: "list before the bucket exists", args: "remotes list", want: []string{"does not exist yet"}},
		{name: "add", args: "remotes add B.example.com", want: []string{"added b.example.com (may call: default rules)"}},
		{name: "add with rules", args: "remotes add c.example.com -allow brig:get-user-by-handle -allow galley:*", want: []string{"added c.example.com (may call: brig:get-user-by-handle galley:*)"}},
		{name: "list", args: "remotes list", want: []string{"b.example.com  default rules", "c.example.com  brig:get-user-by-handle galley:*", "2 remote(s)"}},
		{name: "set default rules", args: "rules set brig:*", want: []string{"default rules: brig:*"}},
		{name: "show default rules", args: "rules show", want: []string{"default rules: brig:*"}},
		{name: "clear default rules", args: "rules clear", want: []string{"every rpc of FED_COMPONENTS"}},
		{name: "remove", args: "remotes remove b.example.com", want: []string{"removed b.example.com"}},
		{name: "list after remove", args: "remotes list", want: []string{"1 remote(s)"}},
		{name: "bad domain", args: "remotes add b..example.com", err: errors.New("domain")},
		{name: "bad rule", args: "remotes add d.example.com -allow brig", err: ErrUsage},
		{name: "bad rpc", args: "remotes add d.example.com -allow brig:a*b", err: errors.New("rule")},
		{name: "unknown command", args: "remotes frobnicate", err: ErrUsage},
		{name: "no command", args: "remotes", err: ErrUsage},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Run(context.Background(), cfg, strings.Fields(st.args), &out)
			if st.err != nil {
				if err == nil {
					t.Fatalf("want an error, got output %q", out.String())
				}
				if errors.Is(st.err, ErrUsage) && !errors.Is(err, ErrUsage) {
					t.Fatalf("got %v, want a usage error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range st.want {
				if !strings.Contains(out.String(), w) {
					t.Fatalf("output %q lacks %q", out.String(), w)
				}
			}
		})
	}
}
