package setup

import (
	"runtime"
	"testing"
)

func TestTuneRuntime(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(procs) })
	tests := []struct {
		name string
		env  string // GOMAXPROCS in the environment
		want int
	}{
		{"one P when unset", "", DefaultGOMAXPROCS},
		{"the operator's value wins", "3", 2}, // the runtime read it at start; left as it is
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runtime.GOMAXPROCS(2)
			got := TuneRuntime(func(k string) string {
				if k == "GOMAXPROCS" {
					return tc.env
				}
				return ""
			})
			if got != tc.want || runtime.GOMAXPROCS(0) != tc.want {
				t.Errorf("GOMAXPROCS %d (runtime %d), want %d", got, runtime.GOMAXPROCS(0), tc.want)
			}
		})
	}
}
