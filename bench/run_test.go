package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestRunSmoke runs every scenario briefly and checks that each one
// answered without errors (nginx is skipped when it is not installed).
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two backends")
	}
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	results, err := Run(ctx, Config{
		Scenarios: AllScenarios, Sizes: []int{256}, InFlight: []int{4}, Matrix: MatrixKey,
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond, Rounds: 1,
		ServiceLog: "json", Out: &out,
	})
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if len(results) != len(AllScenarios) {
		t.Fatalf("%d results", len(results))
	}
	for _, r := range results {
		if r.Skipped != "" {
			t.Logf("%s skipped: %s", r.Scenario, r.Skipped)
			continue
		}
		if r.Errors > 0 || r.Requests == 0 {
			t.Errorf("%s: %d requests, %d errors (%s)", r.Scenario, r.Requests, r.Errors, r.FirstError)
		}
	}
	for _, want := range []string{"throughput ratio", "targets at 256 B × 64", "federated / go-mtls"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
