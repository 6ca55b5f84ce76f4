package hub

import (
	"fmt"
	"io"
	"time"
)

// progress draws one line on a terminal: bytes done of the total, speed and time left, redrawn
// at most four times a second.
type progress struct {
	w      io.Writer
	name   string
	total  int64 // bytes to fetch in this run
	done   int64
	start  time.Time
	last   time.Time
	resume int64 // bytes found on disk from an earlier run, counted as done but not in the speed
}

func newProgress(w io.Writer, name string, total int64) *progress {
	now := time.Now()
	return &progress{w: w, name: name, total: total, start: now, last: now}
}

// resumed counts n bytes an earlier run had already fetched.
func (p *progress) resumed(n int64) {
	p.done += n
	p.resume += n
}

func (p *progress) Write(b []byte) (int, error) {
	p.done += int64(len(b))
	if p.w != nil && time.Since(p.last) >= 250*time.Millisecond {
		p.last = time.Now()
		fmt.Fprintf(p.w, "\r%s  ", p.line())
	}
	return len(b), nil
}

func (p *progress) speed() float64 {
	return float64(p.done-p.resume) / max(time.Since(p.start).Seconds(), 1e-3)
}

func (p *progress) line() string {
	s := p.speed()
	left := "--:--"
	if s > 0 {
		left = clock(time.Duration(float64(p.total-p.done) / s * float64(time.Second)))
	}
	return fmt.Sprintf("pull %s: %s / %s, %s/s, %s left", p.name, size(p.done), size(p.total), size(int64(s)), left)
}

func (p *progress) finish() {
	if p.w == nil {
		return
	}
	if p.total == 0 {
		fmt.Fprintf(p.w, "pull %s: every file already in the cache\n", p.name)
		return
	}
	fmt.Fprintf(p.w, "\rpull %s: %s in %s, %s/s            \n", p.name, size(p.done), clock(time.Since(p.start)), size(int64(p.speed())))
}

// size prints a byte count in decimal units, as the Hub's pages do.
func size(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

func clock(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
