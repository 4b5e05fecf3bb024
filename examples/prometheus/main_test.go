package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// values parses scraped lines "name{labels} value" into a map from
// "name{labels}" to the value.
func values(t *testing.T, lines []string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, l := range lines {
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		out[l[:i]] = v
	}
	return out
}

// TestMetricsEndpoint scrapes /metrics while the workload runs, then once
// it is done, and checks the ringbus series and their values.
func TestMetricsEndpoint(t *testing.T) {
	ctx := context.Background()
	a, err := newApp()
	if err != nil {
		t.Fatal(err)
	}
	defer a.close(ctx)
	srv := httptest.NewServer(a.mux())
	defer srv.Close()
	url := srv.URL + "/metrics"

	const orders = 3000
	done := make(chan error, 1)
	go func() { done <- a.workload(ctx, orders) }()
	// While it runs: the series are there from the first scrape, and the
	// counters never go down from one scrape to the next.
	var last map[string]float64
	running := true
	for scrapes := 0; running; scrapes++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("workload: %v", err)
			}
			running = false
		default:
		}
		lines, err := scrape(ctx, url)
		if err != nil {
			t.Fatalf("scrape %d: %v", scrapes, err)
		}
		v := values(t, lines)
		for _, name := range []string{"ringbus_emitted_total", "ringbus_delivered_total", "ringbus_queued", "ringbus_retrying", "ringbus_dead_letters"} {
			if _, ok := v[name]; !ok {
				t.Fatalf("scrape %d: no %s in %q", scrapes, name, lines)
			}
		}
		if q := v["ringbus_queued"]; q < 0 || q > orders {
			t.Errorf("scrape %d: ringbus_queued = %v, want 0..%d", scrapes, q, orders)
		}
		for _, name := range []string{"ringbus_emitted_total", "ringbus_delivered_total"} {
			if v[name] < last[name] {
				t.Errorf("scrape %d: %s went down from %v to %v", scrapes, name, last[name], v[name])
			}
		}
		last = v
	}

	// Done: every order handled. Every 10th order fails billing once,
	// every 97th is a dead letter of audit.
	lines, err := scrape(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	v := values(t, lines)
	dead, retried := float64(orders/97), float64(orders/10)
	for name, want := range map[string]float64{
		"ringbus_emitted_total":       orders,
		"ringbus_delivered_total":     3*orders - dead,
		"ringbus_failed_total":        retried + dead,
		"ringbus_retried_total":       retried,
		"ringbus_dead_lettered_total": dead,
		"ringbus_dead_letters":        dead,
		"ringbus_queued":              0,
		"ringbus_retrying":            0,
		`ringbus_handler_duration_seconds_count{ringbus_outcome="delivered",ringbus_subscriber="mailer"}`: orders,
		`ringbus_handler_duration_seconds_count{ringbus_outcome="failed",ringbus_subscriber="audit"}`:     dead,
		`ringbus_handler_duration_seconds_count{ringbus_outcome="failed",ringbus_subscriber="billing"}`:   retried,
	} {
		if got, ok := v[name]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if sum := v[`ringbus_handler_duration_seconds_sum{ringbus_outcome="delivered",ringbus_subscriber="billing"}`]; sum <= 0 {
		t.Errorf("billing's delivered duration sum = %v, want > 0", sum)
	}
}

// TestRun runs the program as main does, on a free port.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run("localhost:0", 200, 0, &out); err != nil {
		t.Fatalf("run() = %v", err)
	}
	for _, want := range []string{"serving http://", "workload done: 200 orders emitted", "ringbus_emitted_total 200"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
