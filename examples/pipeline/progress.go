package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
)

// How often the progress line is drawn: redrawn in place on a terminal,
// a new line each time otherwise (a log, a pipe, CI), so less often.
const (
	ttyEvery   = 200 * time.Millisecond
	plainEvery = time.Second
)

// progress draws a line of d's Stats on out from a goroutine of its own,
// until stop, which joins it.
type progress struct {
	d     *dispatcher.Dispatcher
	out   io.Writer
	tty   bool
	start time.Time
	quit  chan struct{} // closed by stop
	done  chan struct{} // closed by the goroutine when it returns
}

// startProgress starts drawing d's progress on out; tty says whether out
// is a terminal, where the line is redrawn in place.
func startProgress(d *dispatcher.Dispatcher, out io.Writer, tty bool) *progress {
	p := &progress{d: d, out: out, tty: tty, start: time.Now(), quit: make(chan struct{}), done: make(chan struct{})}
	every := plainEvery
	if tty {
		every = ttyEvery
	}
	go p.loop(every)
	return p
}

func (p *progress) loop(every time.Duration) {
	defer close(p.done)
	t := time.NewTicker(every)
	defer t.Stop()
	last, lastAt := p.d.Stats().Emitted, p.start
	for {
		select {
		case now := <-t.C:
			st := p.d.Stats()
			rate := float64(st.Emitted-last) / now.Sub(lastAt).Seconds()
			last, lastAt = st.Emitted, now
			p.draw(now, rate, st)
		case <-p.quit:
			if p.tty {
				fmt.Fprintln(p.out) // leave the last line drawn
			}
			return
		}
	}
}

// draw writes one progress line.
func (p *progress) draw(now time.Time, rate float64, st dispatcher.Stats) {
	line := fmt.Sprintf("%5.1fs %10.0f events/s  queued %5d  retrying %4d  dead letters %4d",
		now.Sub(p.start).Seconds(), rate, st.Queued, st.Retrying, st.DeadLetters)
	if p.tty {
		fmt.Fprintf(p.out, "\r%s\x1b[K", line) // back to the line's start, then clear what is left
		return
	}
	fmt.Fprintln(p.out, line)
}

// stop stops the drawing and waits for its goroutine to return. Call it
// once.
func (p *progress) stop() {
	close(p.quit)
	<-p.done
}

// isTerminal reports whether f is a terminal (a character device), where
// a line can be redrawn with a carriage return.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
