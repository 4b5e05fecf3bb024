package natsbridge_test

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/natsbridge"
)

// The crash test re-executes the test binary as a child that runs the
// embedded server, a consumer and a producer until the parent kills it
// with SIGKILL. The child reports on stdout, one line per write (atomic
// on a pipe): "P n" once the durable publish of order n returned, "H n"
// when a handler got order n (before it returns, so before the ack).
const (
	crashDirEnv   = "NATSBRIDGE_CRASH_DIR"
	crashRoundEnv = "NATSBRIDGE_CRASH_ROUND"
)

// crashConsumer is the consumer config of the child and of the parent's
// final check. A short AckWait brings back soon what a killed child had
// in flight; a large MaxDeliver keeps kills from dead-lettering.
var crashConsumer = natsbridge.ConsumerConfig{
	Durable:    "crash",
	AckWait:    200 * time.Millisecond,
	MaxDeliver: 1000,
	Backoff:    func(int) time.Duration { return time.Millisecond },
	Bind:       []natsbridge.Binding{natsbridge.Bind[order](">")},
}

// crashChild runs the child's part when the test binary was started as
// one, and reports whether it was; it returns only on a setup failure.
func crashChild() bool {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		return false
	}
	round, _ := strconv.Atoi(os.Getenv(crashRoundEnv))
	if err := runCrashChild(dir, round); err != nil {
		fmt.Fprintln(os.Stderr, "crash child:", err)
		os.Exit(2)
	}
	return true
}

func runCrashChild(dir string, round int) error {
	var outMu sync.Mutex
	say := func(kind byte, n int) {
		outMu.Lock()
		defer outMu.Unlock()
		os.Stdout.WriteString(string(kind) + " " + strconv.Itoa(n) + "\n")
	}
	srv, err := natsbridge.StartEmbedded(natsbridge.EmbeddedConfig{Dir: dir})
	if err != nil {
		return err
	}
	ctx := context.Background()
	b, err := natsbridge.New(ctx, srv.Conn(), natsbridge.Config{})
	if err != nil {
		return err
	}
	d, err := dispatcher.New(dispatcher.WithWorkers(2))
	if err != nil {
		return err
	}
	go d.Run(ctx) // killed, never stopped
	if _, err := d.On(">", dispatcher.Handle(func(_ context.Context, o order) error {
		say('H', o.N)
		return nil
	})); err != nil {
		return err
	}
	c, err := b.Consume(ctx, d, crashConsumer)
	if err != nil {
		return err
	}
	// Catch up before producing: wait until the consumer has nothing
	// pending and nothing awaiting an ack, then say so ("C 0").
	if err := waitCaughtUp(ctx, b, c, func() bool { return true }); err != nil {
		return err
	}
	say('C', 0)
	for k := 0; ; k++ {
		n := round*1_000_000 + k
		e := dispatcher.Event{Topic: "jobs.run", Key: strconv.Itoa(n % 4), Payload: order{N: n}}
		if err := b.Publish(ctx, e); err != nil {
			return err
		}
		say('P', n)
	}
}

// crashLog is what the parent learned from the children.
type crashLog struct {
	published map[int]bool
	handled   map[int]bool
}

// record notes one line of a child; it reports the line's kind, or ""
// for a line that is not "<kind> <n>".
func (l *crashLog) record(line string) string {
	kind, num, _ := strings.Cut(line, " ")
	n, err := strconv.Atoi(num)
	if err != nil {
		return ""
	}
	switch kind {
	case "P":
		l.published[n] = true
	case "H":
		l.handled[n] = true
	}
	return kind
}

// unhandled returns the published orders not handled yet, sorted.
func (l *crashLog) unhandled() []int {
	return l.unhandledOf(slices.Collect(maps.Keys(l.published)))
}

// unhandledOf returns those of ns not handled yet, sorted.
func (l *crashLog) unhandledOf(ns []int) []int {
	var out []int
	for _, n := range ns {
		if !l.handled[n] {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func TestCrashKill9(t *testing.T) {
	dir := t.TempDir()
	log := &crashLog{published: map[int]bool{}, handled: map[int]bool{}}
	for round := range crashKills {
		crashRound(t, dir, round, log)
	}
	// The last word in this process: the store opens cleanly, and every
	// order whose publish returned is handled once the consumer caught up.
	srv := startServer(t, dir)
	b := newBridge(t, srv, natsbridge.Config{})
	info, err := b.JetStream().Stream(context.Background(), natsbridge.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().State.Msgs; got < uint64(len(log.published)) {
		t.Errorf("the stream holds %d messages, want at least the %d published", got, len(log.published))
	}
	d := runDispatcher(t, dispatcher.WithWorkers(2))
	h := newHandled(1024)
	if _, err := d.On(">", h.handler()); err != nil {
		t.Fatal(err)
	}
	c, err := b.Consume(context.Background(), d, crashConsumer)
	if err != nil {
		t.Fatal(err)
	}
	// Read calls until the consumer has caught up: nothing pending,
	// nothing awaiting an ack.
	caught := make(chan error, 1)
	go func() {
		caught <- waitCaughtUp(context.Background(), b, c, func() bool { return len(h.ch) == 0 })
	}()
	for done := false; !done; {
		select {
		case o := <-h.ch:
			log.handled[o.N] = true
		case err := <-caught:
			if err != nil {
				t.Fatal(err)
			}
			done = true
		}
	}
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	for len(h.ch) > 0 {
		log.handled[(<-h.ch).N] = true
	}
	if lost := log.unhandled(); len(lost) > 0 {
		t.Fatalf("%d orders published and never handled: %v", len(lost), lost)
	}
	t.Logf("%d kills, %d orders published and handled", crashKills, len(log.published))
}

// crashRound runs one child and kills it. In three rounds of four it
// first waits until the child handled every order published before it
// started (the consumer resumed after the kill), then for a random number
// of further publishes; in the others it kills at a random line, perhaps
// before the child caught up.
func crashRound(t *testing.T, dir string, round int, log *crashLog) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKill9$")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round+1))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	catchUp := rand.IntN(4) != 0
	backlog := log.unhandled()
	lines, after := 0, 1+rand.IntN(300)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		kind := log.record(sc.Text())
		if kind == "" {
			t.Fatalf("child said %q", sc.Text())
		}
		lines++
		if catchUp {
			if kind != "C" {
				continue
			}
			if lost := log.unhandledOf(backlog); len(lost) > 0 {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("round %d: the consumer caught up after the restart, and these published orders were never handled: %v",
					round, lost)
			}
			catchUp, lines = false, 0 // now count the random lines
		}
		if lines >= after {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Read what the child wrote before it died: it was said.
	for sc.Scan() {
		log.record(sc.Text())
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("child %d ended with %v, want killed (its stderr is above)", round, err)
	}
}

// waitCaughtUp waits until c's durable consumer has no message pending
// or awaiting an ack, c holds none in flight and idle reports true.
func waitCaughtUp(ctx context.Context, b *natsbridge.Bridge, c *natsbridge.Consumer, idle func() bool) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ci, err := b.JetStream().Consumer(ctx, natsbridge.DefaultStream, c.Name())
		if err != nil {
			return err
		}
		if i := ci.CachedInfo(); i.NumPending == 0 && i.NumAckPending == 0 && c.InFlight() == 0 && idle() {
			return nil
		}
		<-tick.C
	}
}
