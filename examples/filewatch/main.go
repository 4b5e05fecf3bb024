// Command filewatch watches a directory and handles each file that lands
// there on a ringbus dispatcher: "file.landed" (keyed by the file's name)
// goes to a checksum handler, which verifies the file's trailer and emits
// "file.verified"; an indexer and an archiver take that; the archiver
// emits "file.archived".
//
// A landed file ends with a checksum trailer line, "sha256 <hex>", the
// SHA-256 of everything before it. A file without a trailer may still be
// being written, so its check is retried; after the retries it is a dead
// letter. A file whose trailer does not match is corrupt: a dead letter at
// once (dispatcher.Permanent), with the two checksums in its reason.
// Writers that write elsewhere (or under a name starting with '.') and
// rename into the directory are never seen half-written.
//
//	go run . -dir /tmp/inbox
//	printf 'hello\n' > /tmp/x; printf 'sha256 %s\n' "$(sha256sum /tmp/x | cut -c1-64)" >> /tmp/x; mv /tmp/x /tmp/inbox/
//
// On SIGINT or SIGTERM it stops watching, lets the dispatcher finish what
// it holds (retries included, for up to -shutdown), and prints the stats
// and the dead letters.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	dir := flag.String("dir", ".", "the directory to watch")
	archive := flag.String("archive", "", "where verified files go (default: <dir>/archive, on the same filesystem)")
	workers := flag.Int("workers", 2, "dispatcher workers")
	shutdown := flag.Duration("shutdown", 10*time.Second, "how long the graceful shutdown may take")
	flag.Parse()
	log.SetFlags(log.Ltime)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := New(Config{
		Dir:             *dir,
		ArchiveDir:      *archive,
		Workers:         *workers,
		ShutdownTimeout: *shutdown,
		Log:             log.Default(),
	})
	if err != nil {
		log.Fatal(err)
	}
	runErr := s.Run(ctx)
	stop() // a second SIGINT kills the process at once
	report(s)
	if runErr != nil {
		log.Fatal(runErr)
	}
}

// report prints the stats, the index's size and the dead letters.
func report(s *Service) {
	d := s.Dispatcher()
	st := d.Stats()
	fmt.Printf("stats: emitted=%d delivered=%d failed=%d retried=%d dead-lettered=%d dropped=%d; %d files indexed\n",
		st.Emitted, st.Delivered, st.Failed, st.Retried, st.DeadLettered, st.Dropped, len(s.Index().Files()))
	for _, dl := range d.DeadLetters() {
		fmt.Printf("dead letter: %s (event %d, %s, after %d attempt(s)): %v\n",
			dl.Event.Key, dl.Event.ID, dl.Subscriber, dl.Attempts, dl.Err)
	}
}
