package discovery

import (
	"math/rand/v2"
	"strings"
	"time"
)

// appendTargets appends e's targets to dst in RFC 2782 order, the targets
// marked down last.
func (r *Resolver) appendTargets(dst []Target, e *entry) []Target {
	n0 := len(dst)
	dst = append(dst, e.targets...)
	out := dst[n0:]
	for _, g := range e.groups {
		shuffle(out[g.start:g.end], g.sum, g.zeros)
	}
	if r.downN.Load() > 0 {
		r.sinkDown(out)
	}
	return dst
}

// shuffle puts the targets of one priority in RFC 2782's weighted random
// order: each position is drawn among the remaining targets with a
// probability proportional to the weight. As in the RFC's algorithm
// (weight-0 records first in the list, a random number in [0, sum]),
// weight-0 records together are drawn with probability 1/(sum+1), one of
// them uniformly; when all remaining weights are 0 the order is uniform.
func shuffle(g []Target, sum uint32, zeros int) {
	for len(g) > 1 {
		pick := 0
		var n uint32
		if zeros > 0 {
			n = rand.Uint32N(sum + 1) // [0, sum]
		} else {
			n = rand.Uint32N(sum) + 1 // [1, sum]; sum > 0 here
		}
		if n == 0 {
			k := rand.IntN(zeros)
			for i := range g {
				if g[i].Weight == 0 {
					if k == 0 {
						pick = i
						break
					}
					k--
				}
			}
		} else {
			var s uint32
			for i := range g {
				s += uint32(g[i].Weight)
				if s >= n {
					pick = i
					break
				}
			}
		}
		g[0], g[pick] = g[pick], g[0]
		sum -= uint32(g[0].Weight)
		if g[0].Weight == 0 {
			zeros--
		}
		g = g[1:]
	}
}

// downKey identifies a target for down marking.
type downKey struct {
	host string
	port uint16
}

// downState is the down marking of one target.
type downState struct {
	until    mono // down until then
	failures int  // consecutive failures
}

// ReportFailure marks t down: SRV and AppendSRV put it after the healthy
// targets for a short time that grows with each consecutive failure
// (DownMin doubling up to DownMax, ±25% jitter, never over DownMax). Failures older than
// DownMax after the previous down time ended start the count again.
func (r *Resolver) ReportFailure(t Target) {
	k := downKey{strings.ToLower(strings.TrimSuffix(t.Host, ".")), t.Port}
	now := r.now()
	r.downMu.Lock()
	defer r.downMu.Unlock()
	st := r.down[k]
	if st == nil {
		if len(r.down) >= 256 {
			for key, s := range r.down {
				if time.Duration(now-s.until) > r.cfg.DownMax {
					delete(r.down, key)
				}
			}
		}
		st = &downState{}
		r.down[k] = st
	} else if time.Duration(now-st.until) > r.cfg.DownMax {
		st.failures = 0
	}
	st.failures++
	d := r.cfg.DownMin
	for i := 1; i < st.failures && d < r.cfg.DownMax; i++ {
		d *= 2
	}
	d = min(d, r.cfg.DownMax)
	if d >= 4 {
		d = min(d-d/4+rand.N(d/2), r.cfg.DownMax) // [0.75d, 1.25d), at most DownMax
	}
	st.until = now.add(d)
	r.downN.Store(int32(len(r.down)))
}

// ReportSuccess clears the down marking of t.
func (r *Resolver) ReportSuccess(t Target) {
	if r.downN.Load() == 0 {
		return
	}
	k := downKey{strings.ToLower(strings.TrimSuffix(t.Host, ".")), t.Port}
	r.downMu.Lock()
	defer r.downMu.Unlock()
	delete(r.down, k)
	r.downN.Store(int32(len(r.down)))
}

// Down reports whether t is currently marked down.
func (r *Resolver) Down(t Target) bool {
	if r.downN.Load() == 0 {
		return false
	}
	now := r.now()
	r.downMu.RLock()
	defer r.downMu.RUnlock()
	return r.isDownLocked(t, now)
}

func (r *Resolver) isDownLocked(t Target, now mono) bool {
	st := r.down[downKey{t.Host, t.Port}]
	return st != nil && now < st.until
}

// sinkDown moves the targets marked down after the healthy ones, keeping
// the order within each class. It allocates only for more than 64 targets.
func (r *Resolver) sinkDown(out []Target) {
	var small [1]uint64
	mask := small[:]
	if len(out) > 64 {
		mask = make([]uint64, (len(out)+63)/64)
	}
	now := r.nowFast()
	found := false
	r.downMu.RLock()
	for i := range out {
		if r.isDownLocked(out[i], now) {
			mask[i/64] |= 1 << (i % 64)
			found = true
		}
	}
	r.downMu.RUnlock()
	if !found {
		return
	}
	// Stable partition: out[w:i] holds only down targets, so moving a
	// healthy out[i] to w shifts them by one.
	w := 0
	for i := range out {
		if mask[i/64]&(1<<(i%64)) != 0 {
			continue
		}
		if i != w {
			t := out[i]
			copy(out[w+1:i+1], out[w:i])
			out[w] = t
		}
		w++
	}
}
