// Command prometheus serves a ringbus dispatcher's metrics on /metrics,
// through OpenTelemetry's Prometheus exporter, while a workload runs.
//
// An order service emits "order.placed" events, keyed by customer; three
// subscribers handle them under Run: billing fails now and then with a
// transient error and is retried, mailer always succeeds, and audit
// refuses orders with a negative amount (a Permanent error: a dead letter
// at once). While the orders flow, /metrics shows ringbus_emitted_total,
// ringbus_queued, ringbus_handler_duration_seconds and the rest (see the
// otelbus package doc). When the workload is done the dispatcher shuts
// down, the program scrapes its own /metrics once and prints the ringbus
// lines, and, with -hold, keeps serving for a while for a real Prometheus
// or curl:
//
//	go run . -addr localhost:2112 -hold 1m
//	curl -s localhost:2112/metrics | grep ringbus_
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	otelmetric "go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/otelbus"
)

// Order is the payload of "order.placed".
type Order struct {
	ID       int
	Customer string
	Amount   int // cents; negative amounts are refused by audit
}

func main() {
	log.SetFlags(0)
	addr := flag.String("addr", "localhost:0", "where to serve /metrics (port 0: any free port)")
	orders := flag.Int("orders", 5000, "how many orders the workload emits")
	hold := flag.Duration("hold", 0, "how long to keep serving /metrics after the workload")
	flag.Parse()
	if err := run(*addr, *orders, *hold, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(addr string, orders int, hold time.Duration, out io.Writer) error {
	ctx := context.Background()
	a, err := newApp()
	if err != nil {
		return err
	}
	defer a.close(ctx)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: a.mux(), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		_ = srv.Shutdown(ctx)
		<-served
	}()
	url := "http://" + ln.Addr().String() + "/metrics"
	fmt.Fprintf(out, "serving %s\n", url)

	if err := a.workload(ctx, orders); err != nil {
		return err
	}
	st := a.d.Stats()
	fmt.Fprintf(out, "workload done: %d orders emitted, %d handler calls delivered, %d failed, %d retried, %d dead letters\n",
		st.Emitted, st.Delivered, st.Failed, st.Retried, st.DeadLetters)

	lines, err := scrape(ctx, url)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "ringbus lines of /metrics (histogram buckets left out):")
	for _, l := range lines {
		if !strings.Contains(l, "_bucket{") {
			fmt.Fprintln(out, "  "+l)
		}
	}
	if hold > 0 {
		fmt.Fprintf(out, "serving %s for %v more\n", url, hold)
		time.Sleep(hold)
	}
	return nil
}

// app is the dispatcher, its instrumentation and the Prometheus registry
// the exporter writes to.
type app struct {
	d   *dispatcher.Dispatcher
	reg *prometheus.Registry
	mp  *sdkmetric.MeterProvider
	obs otelmetric.Registration
}

func newApp() (*app, error) {
	a := &app{reg: prometheus.NewRegistry()}
	// Without the otel_scope_* labels every series would carry: one
	// instrumentation scope feeds this registry.
	exporter, err := otelprom.New(otelprom.WithRegisterer(a.reg), otelprom.WithoutScopeInfo())
	if err != nil {
		return nil, err
	}
	a.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	tel, err := otelbus.New(otelbus.WithMeterProvider(a.mp))
	if err != nil {
		return nil, err
	}
	a.d, err = dispatcher.New(append(tel.Options(),
		dispatcher.WithWorkers(2),
		dispatcher.WithCapacity(256),
		dispatcher.WithRetry(3, dispatcher.ConstantBackoff(time.Millisecond)),
	)...)
	if err != nil {
		return nil, err
	}
	if a.obs, err = tel.Observe(a.d); err != nil {
		return nil, err
	}
	for _, s := range []struct {
		name string
		h    dispatcher.Handler
	}{
		{"billing", dispatcher.HandleEvent(bill)},
		{"mailer", dispatcher.Handle(mail)},
		{"audit", dispatcher.Handle(audit)},
	} {
		if _, err := a.d.On("order.placed", s.h, dispatcher.WithName(s.name)); err != nil {
			return nil, err
		}
	}
	return a, nil
}

var (
	errPaymentTimeout = errors.New("payment provider timed out")
	errNegative       = errors.New("negative amount")
)

// bill fails the first attempt of every tenth order, as a flaky payment
// provider would.
func bill(_ context.Context, e dispatcher.Event, o Order) error {
	work(50 * time.Microsecond)
	if o.ID%10 == 0 && e.Attempt == 1 {
		return errPaymentTimeout
	}
	return nil
}

func mail(context.Context, Order) error {
	work(20 * time.Microsecond)
	return nil
}

func audit(_ context.Context, o Order) error {
	if o.Amount < 0 {
		return dispatcher.Permanent(fmt.Errorf("order %d: %w", o.ID, errNegative))
	}
	return nil
}

// work stands for a handler's own work: it spins for about d.
func work(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}

// mux serves /metrics from the registry.
func (a *app) mux() *http.ServeMux {
	m := http.NewServeMux()
	m.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	return m
}

// workload runs the dispatcher, emits orders (every 97th with a negative
// amount), and shuts the dispatcher down once they are all handled.
func (a *app) workload(ctx context.Context, orders int) error {
	runErr := make(chan error, 1)
	go func() { runErr <- a.d.Run(context.WithoutCancel(ctx)) }()
	customers := []string{"acme", "globex", "initech", "umbrella"}
	for i := 1; i <= orders; i++ {
		o := Order{ID: i, Customer: customers[rand.IntN(len(customers))], Amount: 100 + rand.IntN(10000)}
		if i%97 == 0 {
			o.Amount = -o.Amount
		}
		if err := a.d.EmitEvent(ctx, dispatcher.Event{Topic: "order.placed", Key: o.Customer, Payload: o}); err != nil {
			return err
		}
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err := a.d.Shutdown(sctx)
	rerr := <-runErr
	if errors.Is(rerr, dispatcher.ErrClosed) && err == nil {
		// A Shutdown that came before Run had taken the queue (few
		// orders) drained it on this goroutine: nothing is lost.
		rerr = nil
	}
	return errors.Join(err, rerr)
}

// close stops the dispatcher (if the workload did not) and the metrics.
func (a *app) close(ctx context.Context) {
	_ = a.d.Close()
	_ = a.obs.Unregister()
	_ = a.mp.Shutdown(ctx)
}

// scrape returns the lines of url's body that are about ringbus, comments
// left out.
func scrape(ctx context.Context, url string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "ringbus_") {
			lines = append(lines, l)
		}
	}
	return lines, sc.Err()
}
