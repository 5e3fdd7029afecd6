package bench

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// printHeader prints the machine and the run's parameters.
func printHeader(out io.Writer, cfg Config, nginxVersion string) {
	fmt.Fprintf(out, "fedbench: %d CPUs (GOMAXPROCS %d), %s, %s %s/%s\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), cpuModel(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if nginxVersion != "" {
		fmt.Fprintf(out, "nginx: %s\n", nginxVersion)
	}
	host, _ := os.Hostname()
	fmt.Fprintf(out, "host %s, %d round(s) × %v window per scenario and cell, each after %v warm-up, matrix %s, service logs %s\n",
		host, cfg.Rounds, cfg.Duration, cfg.Warmup, cfg.Matrix, cfg.ServiceLog)
	fmt.Fprintf(out, "scenarios: %s\n\n", strings.Join(cfg.Scenarios, ", "))
}

// printTable prints one line per result.
func printTable(out io.Writer, results []Result) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tbody\tin flight\treq/s\tp50\tp90\tp99\terrors\tallocs/req\tKiB/req\tsyscalls/req\tCPU µs/req\t+nginx µs/req\t")
	for _, r := range results {
		if r.Skipped != "" {
			fmt.Fprintf(tw, "%s\t%s\t%d\tskipped: %s\t\t\t\t\t\t\t\t\t\t\n", r.Scenario, sizeName(r.Body), r.InFlight, r.Skipped)
			continue
		}
		ext := "-"
		if r.Scenario == ScenarioNginx {
			ext = fmt.Sprintf("%.1f", us(r.ExtCPUPerReq))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%s\t%s\t%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t\n",
			r.Scenario, sizeName(r.Body), r.InFlight, r.RPS, ms(r.P50), ms(r.P90), ms(r.P99),
			r.Errors, r.AllocsPerReq, r.BytesPerReq/1024, r.SyscallsPerReq, us(r.CPUPerReq), ext)
	}
	_ = tw.Flush()
	for _, r := range results {
		if r.FirstError != "" {
			fmt.Fprintf(out, "first error of %s %s: %s\n", r.Scenario, r.Cell, r.FirstError)
		}
	}
	fmt.Fprintln(out, "Per request: allocations, KiB allocated, read+write system calls (/proc/self/io) and CPU time (getrusage)")
	fmt.Fprintln(out, "of this whole process (load generator, Go servers, NATS, fedbus); +nginx is the nginx processes' CPU (/proc).")
	fmt.Fprintln(out)
}

func ms(d time.Duration) string  { return fmt.Sprintf("%.3fms", float64(d)/float64(time.Millisecond)) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// ratio is a throughput comparison printed per cell.
type ratio struct {
	num, den string
}

var ratios = []ratio{
	{ScenarioIngress, ScenarioGoMTLS},
	{ScenarioIngress, ScenarioNginx},
	{ScenarioFederated, ScenarioGoMTLS},
	{ScenarioFederated, ScenarioNginx},
	{ScenarioBus, ScenarioNATS},
}

// lookup finds the result of scenario in cell.
func lookup(results []Result, scenario string, cell Cell) (Result, bool) {
	for _, r := range results {
		if r.Scenario == scenario && r.Cell == cell && r.Skipped == "" && r.RPS > 0 {
			return r, true
		}
	}
	return Result{}, false
}

// printRatios prints the throughput ratios of every cell.
func printRatios(out io.Writer, results []Result, cells []Cell) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "throughput ratio\t")
	for _, c := range cells {
		fmt.Fprintf(tw, "%s\t", c)
	}
	fmt.Fprintln(tw)
	for _, q := range ratios {
		fmt.Fprintf(tw, "%s / %s\t", q.num, q.den)
		for _, c := range cells {
			n, ok1 := lookup(results, q.num, c)
			d, ok2 := lookup(results, q.den, c)
			if ok1 && ok2 {
				fmt.Fprintf(tw, "%.2f×\t", n.RPS/d.RPS)
			} else {
				fmt.Fprint(tw, "-\t")
			}
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
	fmt.Fprintln(out)
}

// target is a goal of issue 6: num's throughput at least min × den's.
type target struct {
	num, den string
	min      float64
}

var targets = []target{
	{ScenarioFederated, ScenarioNginx, 1.5},
	{ScenarioFederated, ScenarioGoMTLS, 0.6},
	{ScenarioIngress, ScenarioNginx, 2},
	{ScenarioBus, ScenarioNATS, 0.8},
}

// printTargets judges the targets at the key cell.
func printTargets(out io.Writer, results []Result, cell Cell) {
	fmt.Fprintf(out, "targets at %s:\n", cell)
	for _, t := range targets {
		n, ok1 := lookup(results, t.num, cell)
		d, ok2 := lookup(results, t.den, cell)
		if !ok1 || !ok2 {
			fmt.Fprintf(out, "  %-9s >= %.1f× %-8s  not measured\n", t.num, t.min, t.den)
			continue
		}
		got := n.RPS / d.RPS
		verdict := "MET"
		if got < t.min {
			verdict = "NOT MET"
		}
		if n.Errors > 0 || d.Errors > 0 {
			verdict += fmt.Sprintf(" (with %d and %d errors)", n.Errors, d.Errors)
		}
		fmt.Fprintf(out, "  %-9s >= %.1f× %-8s  %.2f×  %s\n", t.num, t.min, t.den, got, verdict)
	}
}
