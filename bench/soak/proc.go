package soak

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports (sysconf(_SC_CLK_TCK) needs
// cgo to ask).
const clockTicks = 100

// procSource samples the processes whose command line matches re, summed:
// RSS and CPU in cores since the previous sample. It reads /proc, so it
// works on Linux only.
type procSource struct {
	name string
	re   *regexp.Regexp
	self int // this process, never counted

	prev  map[int]uint64 // CPU ticks of each process at the previous sample
	prevT time.Time
}

func (p *procSource) names() []string { return []string{p.name + "_rss_mib", p.name + "_cpu_cores"} }

func (p *procSource) sample(context.Context) ([]float64, error) {
	pids, err := matchingPIDs(p.re, p.self)
	if err != nil {
		return nan(2), err
	}
	now := time.Now()
	var rss, ticks float64
	var found, compared bool
	cur := map[int]uint64{}
	for _, pid := range pids {
		r, err1 := readRSS(pid)
		t, err2 := readCPUTicks(pid)
		if err1 != nil || err2 != nil {
			continue // it exited meanwhile
		}
		found = true
		rss += r
		cur[pid] = t
		if t0, ok := p.prev[pid]; ok && t >= t0 {
			ticks += float64(t - t0)
			compared = true
		}
	}
	dt := now.Sub(p.prevT).Seconds()
	p.prev, p.prevT = cur, now
	if !found {
		return nan(2), fmt.Errorf("no process matches %q", p.re)
	}
	cores := ticks / clockTicks / dt
	if !compared { // the first sample of these processes: no interval yet
		cores = math.NaN()
	}
	return []float64{rss / (1 << 20), cores}, nil
}

func (p *procSource) close() {}

// matchingPIDs lists the processes but self whose command line, its
// arguments joined with spaces, re matches.
func matchingPIDs(re *regexp.Regexp, self int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue // gone, or a kernel thread
		}
		cmdline := string(bytes.ReplaceAll(bytes.TrimRight(b, "\x00"), []byte{0}, []byte{' '}))
		if re.MatchString(cmdline) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// readRSS returns a process's resident set (VmRSS) in bytes.
func readRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				return 0, fmt.Errorf("parsing VmRSS of %d: %w", pid, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// readCPUTicks returns a process's user and system CPU time in clock
// ticks.
func readCPUTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	t, err := parseStatTicks(b)
	if err != nil {
		return 0, fmt.Errorf("parsing /proc/%d/stat: %w", pid, err)
	}
	return t, nil
}

// parseStatTicks returns utime + stime, fields 14 and 15 of a
// /proc/PID/stat (proc(5)).
func parseStatTicks(b []byte) (uint64, error) {
	// Field 2, the command name in parentheses, may hold spaces and
	// parentheses itself: the fields after it follow the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("no ')' after the command name")
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields, want at least 15", len(f)+2)
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("utime %q, stime %q: not numbers", f[11], f[12])
	}
	return utime + stime, nil
}

// nan returns n missing values.
func nan(n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = math.NaN()
	}
	return v
}
