package setup

import (
	"log/slog"
	"runtime"
)

// DefaultGOMAXPROCS is the number of Ps (threads running Go code at once)
// of a fedbus process when the environment does not set GOMAXPROCS: one
// process uses one core, and fedbus scales out by running more processes
// (or set GOMAXPROCS to let one process use more cores).
//
// Go's default, one P per CPU, suits one program that has the machine to
// itself. fedbus runs as several small processes per machine (federators,
// ingresses, beside nats-server and the components), each busy only part
// of the time; with a second P, a process spends much of its time waking
// a thread for each goroutine made ready (runtime.wakep, futex,
// runtime.findRunnable), and its scavenger runs at a fixed share of
// GOMAXPROCS. Measured with the separate-process benchmark (fedbench
// -scenario=procs, BENCHMARKS.md "Separate processes"): one P took the CPU
// per request of a federator and an ingress down by 11–23%.
const DefaultGOMAXPROCS = 1

// TuneRuntime sets GOMAXPROCS to DefaultGOMAXPROCS when getenv (os.Getenv)
// returns nothing for it, and returns the value in force.
func TuneRuntime(getenv func(string) string) int {
	if getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(DefaultGOMAXPROCS)
	}
	return runtime.GOMAXPROCS(0)
}

// logRuntime writes the runtime settings in force.
func logRuntime(log *slog.Logger, maxprocs int) {
	log.Info("go runtime", "gomaxprocs", maxprocs, "cpus", runtime.NumCPU())
}
