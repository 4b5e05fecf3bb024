// Command natscluster shows ringbus events crossing process boundaries
// through NATS JetStream: `go run .` starts an embedded NATS server (on a
// temporary directory, listening on loopback) and two worker processes
// (this program, re-executed) that consume one durable consumer, each
// into its own dispatcher. The parent publishes orders durably; the
// output shows which worker handled which order. Midway the parent kills
// worker-1 with SIGKILL; the events it held without acknowledging them
// come back, after the consumer's AckWait, to worker-2.
//
// With -url the same program uses an external NATS server or cluster
// instead of the embedded one (see README.md).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/natsbridge"
)

// Order is the events' payload.
type Order struct {
	ID int `json:"id"`
}

const (
	workerEnv = "NATSCLUSTER_WORKER" // set in a worker: its name
	urlEnv    = "NATSCLUSTER_URL"    // set in a worker: where the server is
	orders    = 40
	killAfter = 12 // orders handled by worker-1 before the kill
)

// consumerConfig is the workers' durable consumer: a short AckWait, so
// that the killed worker's events come back soon; a few events in flight
// per worker, so that it holds some when it dies.
var consumerConfig = natsbridge.ConsumerConfig{
	Durable:     "workers",
	Topics:      []string{"orders.>"},
	Bind:        []natsbridge.Binding{natsbridge.Bind[Order]("orders.>")},
	MaxInFlight: 4,
	AckWait:     2 * time.Second,
}

func main() {
	log.SetFlags(0)
	if name := os.Getenv(workerEnv); name != "" {
		if err := worker(name, os.Getenv(urlEnv)); err != nil {
			log.Fatalf("%s: %v", name, err)
		}
		return
	}
	url := flag.String("url", "", "NATS server or cluster URLs (comma-separated); default: an embedded server")
	flag.Parse()
	if err := run(*url); err != nil {
		log.Fatal(err)
	}
}

// run is the parent: server, workers, producer.
func run(url string) error {
	ctx := context.Background()
	var nc *nats.Conn
	if url == "" {
		dir, err := os.MkdirTemp("", "natscluster")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		srv, err := natsbridge.StartEmbedded(natsbridge.EmbeddedConfig{Dir: dir, Listen: "127.0.0.1:-1"})
		if err != nil {
			return err
		}
		defer srv.Close()
		url, nc = srv.ClientURL(), srv.Conn()
		fmt.Println("embedded NATS server at", url)
	} else {
		var err error
		if nc, err = nats.Connect(url, nats.MaxReconnects(-1)); err != nil {
			return err
		}
		defer nc.Close()
	}
	b, err := natsbridge.New(ctx, nc, natsbridge.Config{Stream: "NATSCLUSTER", Prefix: "natscluster"})
	if err != nil {
		return err
	}
	defer b.Close(ctx)
	// A fresh run: no orders from an earlier one.
	if err := b.JetStream().DeleteConsumer(ctx, b.Stream(), consumerConfig.Durable); err != nil && !strings.Contains(err.Error(), "not found") {
		return err
	}
	st, err := b.JetStream().Stream(ctx, b.Stream())
	if err != nil {
		return err
	}
	if err := st.Purge(ctx); err != nil {
		return err
	}

	w := newWorkers()
	for _, name := range []string{"worker-1", "worker-2"} {
		if err := w.start(name, url); err != nil {
			return err
		}
	}
	defer w.stopAll()
	for i := 1; i <= orders; i++ {
		e := dispatcher.Event{Topic: "orders.placed", Key: strconv.Itoa(i), Payload: Order{ID: i}}
		if err := b.Publish(ctx, e); err != nil { // returns once stored
			return err
		}
	}
	fmt.Printf("published %d orders\n", orders)

	w.waitHandled("worker-1", killAfter)
	held := w.kill("worker-1")
	fmt.Printf("killed worker-1 (SIGKILL) in the middle of orders %v: neither they nor what it had fetched are acknowledged\n", held)
	w.waitAll(orders)
	fmt.Println(w.summary(held))
	return nil
}

// worker consumes the durable consumer into a local dispatcher until
// SIGTERM or SIGINT, then stops in order: bridge, dispatcher, connection.
func worker(name, url string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	b, err := natsbridge.New(ctx, nc, natsbridge.Config{Stream: "NATSCLUSTER", Prefix: "natscluster"})
	if err != nil {
		return err
	}
	d, err := dispatcher.New(dispatcher.WithCapacity(consumerConfig.MaxInFlight), dispatcher.WithWorkers(2))
	if err != nil {
		return err
	}
	var out sync.Mutex
	say := func(format string, a ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Printf(format+"\n", a...)
	}
	if _, err := d.On("orders.placed", dispatcher.Handle(func(ctx context.Context, o Order) error {
		say("start %d", o.ID)
		time.Sleep(100 * time.Millisecond) // the work
		say("done %d", o.ID)
		return nil
	})); err != nil {
		return err
	}
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(context.WithoutCancel(ctx)) }()
	if _, err := b.Consume(ctx, d, consumerConfig); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(sctx); err != nil {
		return err
	}
	if err := d.Shutdown(sctx); err != nil {
		return err
	}
	return <-runErr
}

// workers runs the worker processes and follows what they say.
type workers struct {
	mu      sync.Mutex
	changed *sync.Cond
	cmds    map[string]*exec.Cmd
	started map[string][]int // orders each worker started, in order
	done    map[string][]int // orders each worker finished
	handled map[int]bool
	readers sync.WaitGroup
}

func newWorkers() *workers {
	w := &workers{cmds: map[string]*exec.Cmd{}, started: map[string][]int{}, done: map[string][]int{}, handled: map[int]bool{}}
	w.changed = sync.NewCond(&w.mu)
	return w
}

func (w *workers) start(name, url string) error {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), workerEnv+"="+name, urlEnv+"="+url)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	w.cmds[name] = cmd
	w.readers.Go(func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			what, num, _ := strings.Cut(sc.Text(), " ")
			id, err := strconv.Atoi(num)
			if err != nil {
				continue
			}
			w.mu.Lock()
			switch what {
			case "start":
				w.started[name] = append(w.started[name], id)
			case "done":
				w.done[name] = append(w.done[name], id)
				w.handled[id] = true
				fmt.Printf("%s handled order %d\n", name, id)
			}
			w.changed.Broadcast()
			w.mu.Unlock()
		}
	})
	return nil
}

func (w *workers) waitHandled(name string, n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.done[name]) < n {
		w.changed.Wait()
	}
}

func (w *workers) waitAll(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.handled) < n {
		w.changed.Wait()
	}
}

// kill kills name with SIGKILL and returns the orders it had started and
// not finished.
func (w *workers) kill(name string) []int {
	cmd := w.cmds[name]
	cmd.Process.Kill()
	cmd.Wait()
	delete(w.cmds, name)
	w.mu.Lock()
	defer w.mu.Unlock()
	var held []int
	for _, id := range w.started[name] {
		if !slices.Contains(w.done[name], id) {
			held = append(held, id)
		}
	}
	return held
}

// stopAll stops the workers still running, gracefully.
func (w *workers) stopAll() {
	for name, cmd := range w.cmds {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			fmt.Printf("%s: %v\n", name, err)
		}
	}
	w.readers.Wait()
}

func (w *workers) summary(held []int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var picked []int
	for _, id := range held {
		if slices.Contains(w.done["worker-2"], id) {
			picked = append(picked, id)
		}
	}
	return fmt.Sprintf("all %d orders handled: worker-1 %d, worker-2 %d; worker-2 picked up %v from worker-1",
		orders, len(w.done["worker-1"]), len(w.done["worker-2"]), picked)
}
