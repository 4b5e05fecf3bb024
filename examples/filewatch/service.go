package main

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/ringbus/ringbus/dispatcher"
)

// The topics, each keyed by the file's name: the events of one file
// reach each handler in order.
const (
	topicLanded   = "file.landed"   // Landed: a file appeared in the watched directory
	topicVerified = "file.verified" // Verified: its checksum trailer matched
	topicArchived = "file.archived" // Archived: it was moved to the archive
)

// Landed is the payload of file.landed.
type Landed struct {
	Name string // the file's name in the watched directory
	Path string
}

// Verified is the payload of file.verified. Body is shared by every
// handler: read it, never change it.
type Verified struct {
	Name   string
	Path   string
	SHA256 string // hex
	Body   []byte // the content before the trailer
}

// Archived is the payload of file.archived.
type Archived struct {
	Name string
	Path string // where it is now
}

// Config configures a Service.
type Config struct {
	Dir        string // the directory watched; required
	ArchiveDir string // where verified files go; default Dir/archive (same filesystem as Dir)
	Workers    int    // dispatcher workers; default 2
	// Attempts and Backoff are the checksum's retry budget, for files
	// still being written: default 3 calls, 100ms, then 200ms apart.
	Attempts int
	Backoff  dispatcher.Backoff
	// ShutdownTimeout bounds the graceful shutdown when Run's ctx ends;
	// default 10s.
	ShutdownTimeout time.Duration
	Log             *log.Logger // what the handlers did; default: discarded
}

// Service watches a directory: each file that lands there is checksummed,
// indexed and archived, by handlers on a dispatcher; a corrupt file
// becomes a dead letter.
type Service struct {
	cfg   Config
	d     *dispatcher.Dispatcher
	index Index
	ready chan struct{} // closed once Run watches Dir
}

// New returns a Service for cfg, with its dispatcher and handlers ready;
// Run starts it.
func New(cfg Config) (*Service, error) {
	if cfg.Dir == "" {
		return nil, errors.New("filewatch: no directory to watch")
	}
	if cfg.ArchiveDir == "" {
		cfg.ArchiveDir = filepath.Join(cfg.Dir, "archive")
	}
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	if cfg.Attempts == 0 {
		cfg.Attempts = 3
	}
	if cfg.Backoff == nil {
		cfg.Backoff = dispatcher.ExponentialBackoff(100*time.Millisecond, time.Second)
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = log.New(io.Discard, "", 0)
	}
	if err := os.MkdirAll(cfg.ArchiveDir, 0o755); err != nil {
		return nil, err
	}
	d, err := dispatcher.New(dispatcher.WithWorkers(cfg.Workers))
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, d: d, ready: make(chan struct{})}
	subs := []struct {
		topic, name string
		h           dispatcher.Handler
		opts        []dispatcher.SubscribeOption
	}{
		{topicLanded, "checksum", dispatcher.Handle(s.checksum),
			[]dispatcher.SubscribeOption{dispatcher.WithRetry(cfg.Attempts, cfg.Backoff)}},
		{topicVerified, "index", dispatcher.Handle(s.indexFile), nil},
		{topicVerified, "archive", dispatcher.Handle(s.archive), nil},
	}
	for _, sub := range subs {
		if _, err := d.On(sub.topic, sub.h, append(sub.opts, dispatcher.WithName(sub.name))...); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Dispatcher returns the service's dispatcher: for its Stats and
// DeadLetters, and for more subscribers.
func (s *Service) Dispatcher() *dispatcher.Dispatcher { return s.d }

// Index returns the index of the files verified.
func (s *Service) Index() *Index { return &s.index }

// Ready returns a channel closed once Run watches the directory and has
// emitted the files already there: a file that lands after that is seen
// by the watch alone.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Run watches the directory until ctx ends, handling each file that lands
// (and, first, each file already there) on the dispatcher's workers. When
// ctx ends it stops watching and shuts the dispatcher down gracefully,
// within cfg.ShutdownTimeout: what is queued, what the handlers emit and
// the retries still waiting are processed first. It returns nil then, or
// what went wrong. Run is called once.
func (s *Service) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(s.cfg.Dir); err != nil {
		return err
	}
	// The workers get a ctx that ctx's end does not cancel: the shutdown
	// below stops them, once they have finished.
	runErr := make(chan error, 1)
	go func() { runErr <- s.d.Run(context.WithoutCancel(ctx)) }()

	err = s.watch(ctx, w)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err = errors.Join(err, s.d.Shutdown(sctx))
	// A Run whose goroutine starts after Shutdown finds the dispatcher
	// closed (ErrClosed): Shutdown did the work, and nothing was lost.
	if rerr := <-runErr; !errors.Is(rerr, dispatcher.ErrClosed) {
		err = errors.Join(err, rerr)
	}
	return err
}

// watch emits a file.landed for each file in the directory, then for each
// file created or moved in, until ctx ends.
func (s *Service) watch(ctx context.Context, w *fsnotify.Watcher) error {
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Type().IsRegular() {
			if err := s.land(ctx, e.Name()); err != nil {
				return err
			}
		}
	}
	close(s.ready)
	s.cfg.Log.Printf("watching %s", s.cfg.Dir)
	for {
		select {
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			// A file moved in is a Create too. Writes are not watched:
			// a file written in place is checked when created, and
			// retried while it has no trailer.
			if !ev.Has(fsnotify.Create) {
				continue
			}
			if fi, err := os.Lstat(ev.Name); err != nil || !fi.Mode().IsRegular() {
				continue // gone already, or a directory (the archive) or a link
			}
			if err := s.land(ctx, filepath.Base(ev.Name)); err != nil {
				return err
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			s.cfg.Log.Printf("watch: %v", err)
		case <-ctx.Done():
			return nil
		}
	}
}

// land emits the file.landed event of the file name, unless the name
// starts with a dot (a file being written, to be renamed into place).
func (s *Service) land(ctx context.Context, name string) error {
	if strings.HasPrefix(name, ".") {
		return nil
	}
	s.cfg.Log.Printf("landed   %s", name)
	err := s.d.EmitEvent(ctx, dispatcher.Event{Topic: topicLanded, Key: name, Payload: Landed{Name: name, Path: filepath.Join(s.cfg.Dir, name)}})
	if ctx.Err() != nil {
		return nil // stopping: the event was not accepted, the file stays for the next run
	}
	return err
}

// checksum reads a landed file and verifies its trailer: a file without
// one is retried (it may still be being written); a corrupt one fails for
// good.
func (s *Service) checksum(ctx context.Context, f Landed) error {
	data, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		s.cfg.Log.Printf("gone     %s (archived by an earlier event, or removed)", f.Name)
		return nil
	}
	if err != nil {
		return err
	}
	body, sum, err := verify(f.Name, data)
	if errors.Is(err, ErrCorrupt) {
		return dispatcher.Permanent(err)
	}
	if err != nil {
		return err
	}
	s.cfg.Log.Printf("verified %s sha256 %s", f.Name, sum[:12])
	return s.d.Emit(ctx, topicVerified, Verified{Name: f.Name, Path: f.Path, SHA256: sum, Body: body})
}

// indexFile adds a verified file's words to the index.
func (s *Service) indexFile(_ context.Context, v Verified) error {
	n := s.index.add(v.Name, v.SHA256, strings.Fields(string(v.Body)))
	s.cfg.Log.Printf("indexed  %s: %d words", v.Name, n)
	return nil
}

// archive moves a verified file to the archive directory.
func (s *Service) archive(ctx context.Context, v Verified) error {
	to := filepath.Join(s.cfg.ArchiveDir, v.Name)
	if err := os.Rename(v.Path, to); errors.Is(err, fs.ErrNotExist) {
		s.cfg.Log.Printf("gone     %s (archived by an earlier event, or removed)", v.Name)
		return nil
	} else if err != nil {
		return err
	}
	s.cfg.Log.Printf("archived %s -> %s", v.Name, to)
	return s.d.Emit(ctx, topicArchived, Archived{Name: v.Name, Path: to})
}

// Index maps words to the verified files that contain them. It is safe
// for concurrent use.
type Index struct {
	mu    sync.Mutex
	files map[string]string              // name -> sha256
	words map[string]map[string]struct{} // word -> names
}

// add indexes the words of the file name and returns how many distinct
// words it has. Indexing a file again adds nothing new.
func (x *Index) add(name, sum string, words []string) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.files == nil {
		x.files, x.words = make(map[string]string), make(map[string]map[string]struct{})
	}
	x.files[name] = sum
	distinct := make(map[string]struct{})
	for _, w := range words {
		w = strings.ToLower(w)
		distinct[w] = struct{}{}
		if x.words[w] == nil {
			x.words[w] = make(map[string]struct{})
		}
		x.words[w][name] = struct{}{}
	}
	return len(distinct)
}

// Lookup returns the names of the files that contain word, sorted.
func (x *Index) Lookup(word string) []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	var names []string
	for name := range x.words[strings.ToLower(word)] {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// Files returns the checksum of each file indexed, by name.
func (x *Index) Files() map[string]string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return maps.Clone(x.files)
}
