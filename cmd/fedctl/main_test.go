package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fedbus/fedbus/test/testbed"
)

// TestCommandLine: fedctl as an operator meets it, against a real NATS
// server: exit codes, where the help goes, and the messages.
func TestCommandLine(t *testing.T) {
	srv, err := testbed.StartNATS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	t.Setenv("FED_NATS_URL", srv.ClientURL())
	tests := []struct {
		name    string
		args    string
		environ []string
		code    int
		stdout  string // substring
		stderr  string // substring
	}{
		{name: "no arguments", code: 2, stderr: "Usage:"},
		{name: "help", args: "-h", code: 0, stdout: `FED_KV_BUCKET                    key-value bucket of the federation config: the services' FED_KV_BUCKET (default "fedbus")`},
		{name: "version", args: "-version", code: 0, stdout: "fedctl dev ("},
		{name: "unknown command", args: "frobnicate", code: 2, stderr: `unknown command "frobnicate"`},
		{name: "typo of a variable", args: "remotes list", environ: []string{"FED_KV_BUKCET=other"}, code: 2, stderr: "FED_KV_BUKCET is not a fedbus variable: did you mean FED_KV_BUCKET?"},
		{name: "a write before create", args: "remotes add b.example.com", code: 1, stderr: "bucket fedbus (FED_KV_BUCKET) does not exist: create it with 'fedctl create'"},
		{name: "create", args: "create", code: 0, stdout: "created bucket fedbus", stderr: "warning: no running federator or ingress answers"},
		{name: "unknown component", args: "rules set nosuchcomponent:foo", code: 1, stderr: `"nosuchcomponent" is not one of the federated components (brig,galley,cargohold)`},
		{name: "add", args: "remotes add b.example.com", code: 0, stdout: "added b.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			code := run(ctx, strings.Fields(tt.args), tt.environ, &stdout, &stderr)
			if code != tt.code || !strings.Contains(stdout.String(), tt.stdout) || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("exit %d, want %d\nstdout %q, want %q\nstderr %q, want %q", code, tt.code, stdout.String(), tt.stdout, stderr.String(), tt.stderr)
			}
		})
	}
}
