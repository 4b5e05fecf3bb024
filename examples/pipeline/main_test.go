package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/dispatcher/dispatchertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFleetRetriesFlapsAndDeadLettersBadAddresses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const events = 2 * flapEvery // IDs 1..2000: flaps on 1000 and 2000, a bad address on 7
		d := dispatchertest.New(t, dispatcher.WithCapacity(events))
		var f fleet
		if err := f.subscribe(d); err != nil {
			t.Fatal(err)
		}
		for i := range events {
			if err := d.EmitEvent(t.Context(), runEvent(i)); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		n, err := dispatchertest.Settle(t, d)
		if n != events+2 || !errors.Is(err, errBadAddress) {
			t.Errorf("Settle() = %d, %v, want %d (two retries) and the bad address", n, err, events+2)
		}
		if waited := time.Since(start); waited < retryBackoff {
			t.Errorf("Settle() took %v of fake time, want at least the retry backoff %v", waited, retryBackoff)
		}
		if a, tr, s, fl := f.audited.Load(), f.triggered.Load(), f.notified.Load(), f.notifyFailed.Load(); a != events || tr != events || s != events-1 || fl != 3 {
			t.Errorf("audited %d, triggered %d, notified %d, notify failed %d; want %d, %d, %d, 3", a, tr, s, fl, events, events, events-1)
		}
		if dls := d.DeadLetters(); len(dls) != 1 || dls[0].Event.ID != 7 || dls[0].Subscriber != "notifier" {
			t.Errorf("dead letters:\n%s want event 7 for the notifier alone", dispatchertest.FormatDeadLetters(dls))
		}
	})
}

func TestRunConcurrentSummary(t *testing.T) {
	var out bytes.Buffer
	cfg := loadConfig{producers: 3, workers: 2, duration: time.Hour, events: 3 * flapEvery}
	if err := runConcurrent(cfg, &out, false); err != nil {
		t.Fatalf("runConcurrent() error = %v", err)
	}
	for _, want := range []string{
		"3 producers, 2 workers, for 1h0m0s:\n",
		"3000 events in ",
		"audit=3000 trigger=3000 notifier sent=2999 failed=4 retried=3; dead letters=1\n",
		`dead letter: event 7 for "notifier" after 1 attempt(s): notifier: address rejected: `, // the tenant depends on which producer emitted first
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("runConcurrent() output lacks %q; it is:\n%s", want, out.String())
		}
	}
}

func TestProgressLines(t *testing.T) {
	st := dispatcher.Stats{Queued: 12, Retrying: 3, DeadLetters: 1}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		tty  bool
		want string
	}{
		{tty: false, want: "  1.5s       2500 events/s  queued    12  retrying    3  dead letters    1\n"},
		{tty: true, want: "\r  1.5s       2500 events/s  queued    12  retrying    3  dead letters    1\x1b[K"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		p := &progress{out: &out, tty: tt.tty, start: start}
		p.draw(start.Add(1500*time.Millisecond), 2500, st)
		if got := out.String(); got != tt.want {
			t.Errorf("draw(tty %v) = %q, want %q", tt.tty, got, tt.want)
		}
	}
}

func TestProgressTicksUntilStopped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := dispatchertest.New(t)
		for _, tty := range []bool{false, true} {
			var out bytes.Buffer
			p := startProgress(d, &out, tty)
			<-time.After(3*time.Second + time.Millisecond) // fake time: the bubble's clock moves when every goroutine waits
			p.stop()
			want := 3 // a line a second
			if tty {
				want = 15 // a redraw every 200ms
			}
			if got := strings.Count(out.String(), "events/s"); got != want {
				t.Errorf("tty %v: %d progress lines in 3s, want %d:\n%q", tty, got, want, out.String())
			}
			if got, last := strings.Count(out.String(), "\n"), strings.HasSuffix(out.String(), "\n"); !last || (tty && got != 1) {
				t.Errorf("tty %v: output ends %q with %d newlines, want a newline last (and alone on a terminal)", tty, out.String()[max(0, out.Len()-20):], got)
			}
		}
	})
}

// BenchmarkFleet runs the concurrent part's handlers under Run for
// several worker counts and capacities:
//
//	go test -run '^$' -bench Fleet -count 10 ./examples/pipeline | tee new.txt
//	benchstat -col /workers new.txt
func BenchmarkFleet(b *testing.B) {
	for _, workers := range []int{1, 2, 4} {
		for _, capacity := range []int{256, 4096} {
			b.Run(fmt.Sprintf("workers=%d/cap=%d", workers, capacity), func(b *testing.B) {
				d, err := dispatcher.New(dispatcher.WithWorkers(workers), dispatcher.WithCapacity(capacity))
				if err != nil {
					b.Fatal(err)
				}
				var f fleet
				if err := f.subscribe(d); err != nil {
					b.Fatal(err)
				}
				dispatchertest.Benchmark(b, d, dispatchertest.Load{Event: runEvent, Producers: 2})
			})
		}
	}
}
