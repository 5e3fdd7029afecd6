package bench

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat. It
// is 100 on every Linux architecture Go supports (sysconf(_SC_CLK_TCK)).
const clockTicks = 100

// sample is what is read at the start and at the end of a measuring
// window: the process's CPU time, its allocations and the CPU time of the
// scenario's child processes.
type sample struct {
	at       time.Time
	cpu      time.Duration
	mallocs  uint64
	bytes    uint64
	childCPU time.Duration
	syscalls uint64 // read and write system calls (syscr + syscw)
}

// takeSample reads the process's counters; extCPU (may be nil) reports the
// CPU time of external processes the scenario runs (nginx).
func takeSample(extCPU func() (time.Duration, error)) (sample, error) {
	var s sample
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.mallocs, s.bytes = ms.Mallocs, ms.TotalAlloc
	cpu, err := processCPU()
	if err != nil {
		return s, err
	}
	s.cpu = cpu
	if s.syscalls, err = ioSyscalls(); err != nil {
		return s, err
	}
	if extCPU != nil {
		if s.childCPU, err = extCPU(); err != nil {
			return s, err
		}
	}
	s.at = time.Now()
	return s, nil
}

// processCPU returns the user plus system CPU time of this process
// (getrusage RUSAGE_SELF, every thread).
func processCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// ioSyscalls returns the number of read and write system calls of this
// process so far (syscr + syscw of /proc/self/io: read, write, send,
// recv and their vector forms).
func ioSyscalls() (uint64, error) {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, fmt.Errorf("read io counters: %w", err)
	}
	var total uint64
	for line := range strings.SplitSeq(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "syscr" && k != "syscw") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("io counter %s: %w", k, err)
		}
		total += n
	}
	return total, nil
}

// procCPU returns the user plus system CPU time of process pid from
// /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	f, err := statFields(data)
	if err != nil {
		return 0, fmt.Errorf("stat of %d: %w", pid, err)
	}
	// Fields after the command: state(3) ppid(4) ... utime(14) stime(15).
	utime, err1 := strconv.ParseUint(f[14-3], 10, 64)
	stime, err2 := strconv.ParseUint(f[15-3], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("stat of %d: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// statFields returns the fields of a /proc/<pid>/stat line after the
// command name (which may contain spaces): index 0 is the state (field 3).
func statFields(data []byte) ([]string, error) {
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, errors.New("malformed stat line")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return nil, errors.New("short stat line")
	}
	return f, nil
}

// treeCPU returns the CPU time of process root and of its direct
// children (nginx: the master and its workers).
func treeCPU(root int) (time.Duration, error) {
	total, err := procCPU(root)
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("list processes: %w", err)
	}
	want := strconv.Itoa(root)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == root {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // the process ended meanwhile
		}
		f, err := statFields(data)
		if err != nil || f[1] != want {
			continue
		}
		if c, err := procCPU(pid); err == nil {
			total += c
		}
	}
	return total, nil
}

// procStatus returns the value in KiB of a "Name:  N kB" line of
// /proc/self/status (VmRSS, VmHWM).
func procStatus(name string) (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read status: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), name+":")
		if !ok {
			continue
		}
		v := strings.TrimSuffix(strings.TrimSpace(rest), " kB")
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status %s %q: %w", name, rest, err)
		}
		return n, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read status: %w", err)
	}
	return 0, fmt.Errorf("status has no %s line", name)
}

// openFDs counts the open file descriptors of this process.
func openFDs() (int, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, fmt.Errorf("list fds: %w", err)
	}
	return len(entries), nil
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted
// latencies, nearest-rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.5) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return sorted[rank]
}

// latencySummary sorts lat in place and returns p50, p90 and p99.
func latencySummary(lat []time.Duration) (p50, p90, p99 time.Duration) {
	slices.Sort(lat)
	return percentile(lat, 50), percentile(lat, 90), percentile(lat, 99)
}

// cpuModel returns the "model name" of /proc/cpuinfo.
func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
