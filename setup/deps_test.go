package setup_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinariesLinkNoTestScaffolding lists what the production binaries
// link (go list -deps) and refuses test scaffolding: the testing package,
// the embedded NATS server, the in-process DNS, CA and backends, and
// testcontainers.
func TestBinariesLinkNoTestScaffolding(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	forbidden := []string{
		"testing",
		"github.com/nats-io/nats-server/v2/server",
		"github.com/fedbus/fedbus/test/testbed",
		"github.com/fedbus/fedbus/test/fedtest",
		"github.com/testcontainers/testcontainers-go",
	}
	for _, bin := range []string{"federator", "ingress"} {
		t.Run(bin, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", "github.com/fedbus/fedbus/cmd/"+bin).CombinedOutput()
			if err != nil {
				t.Fatalf("go list: %v\n%s", err, out)
			}
			deps := map[string]bool{}
			for _, p := range strings.Fields(string(out)) {
				deps[p] = true
			}
			if !deps["github.com/fedbus/fedbus/setup"] {
				t.Fatalf("go list found no setup package in %s's dependencies:\n%s", bin, out)
			}
			for _, f := range forbidden {
				if deps[f] {
					t.Errorf("cmd/%s links %s", bin, f)
				}
			}
		})
	}
}
