package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/dispatcher/dispatchertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// withTrailer returns body followed by its checksum trailer: a file that
// verify accepts.
func withTrailer(body string) []byte {
	return fmt.Appendf([]byte(body), "%s%x\n", trailerPrefix, sha256.Sum256([]byte(body)))
}

// corrupt is a file whose trailer is another content's.
func corrupt(body string) []byte {
	good := withTrailer(body + " (before it was damaged)")
	return append([]byte(body), good[bytes.LastIndex(good, []byte(trailerPrefix)):]...)
}

// write writes a file as a careful writer does: under a dot name, then
// renamed into dir, so that the watch never sees it half-written.
func write(t *testing.T, dir, name string, content []byte) {
	t.Helper()
	tmp := filepath.Join(dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// newService returns a Service on two temporary directories, with the
// given retry backoff, whose dispatcher is closed when the test ends.
func newService(t *testing.T, backoff dispatcher.Backoff) (s *Service, dir, archive string) {
	t.Helper()
	dir, archive = t.TempDir(), t.TempDir()
	s, err := New(Config{Dir: dir, ArchiveDir: archive, Backoff: backoff})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	t.Cleanup(func() { _ = s.Dispatcher().Close() })
	return s, dir, archive
}

// files returns the names in dir, sorted.
func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestVerify(t *testing.T) {
	tests := []struct {
		name string
		give []byte
		want error // nil, ErrIncomplete or ErrCorrupt
		body string
	}{
		{name: "good", give: withTrailer("a\nb\n"), body: "a\nb\n"},
		{name: "empty body", give: withTrailer(""), body: ""},
		{name: "no final newline", give: bytes.TrimSuffix(withTrailer("a\n"), []byte("\n")), body: "a\n"},
		{name: "no trailer", give: []byte("a\nb\n"), want: ErrIncomplete},
		{name: "empty", give: nil, want: ErrIncomplete},
		{name: "mismatch", give: corrupt("a\n"), want: ErrCorrupt},
		{name: "short digest", give: []byte("a\nsha256 abcd\n"), want: ErrCorrupt},
		{name: "not hex", give: []byte("a\nsha256 " + strings.Repeat("z", 64) + "\n"), want: ErrCorrupt},
	}
	for _, tt := range tests {
		body, _, err := verify("f", tt.give)
		if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
			t.Errorf("%s: verify() error = %v, want %v", tt.name, err, tt.want)
		}
		if tt.want == nil && string(body) != tt.body {
			t.Errorf("%s: verify() body = %q, want %q", tt.name, body, tt.body)
		}
	}
}

func TestAFileStillBeingWrittenIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, dir, archive := newService(t, dispatcher.ConstantBackoff(time.Second))
		d := s.Dispatcher()
		dispatchertest.NoDeadLetters(t, d)
		var rec dispatchertest.Recorder
		if _, err := d.On(topicArchived, rec.Handle); err != nil {
			t.Fatal(err)
		}

		// Written in place: the file lands with half its content.
		full := withTrailer("slow writer\n")
		path := filepath.Join(dir, "slow.txt")
		if err := os.WriteFile(path, full[:5], 0o644); err != nil {
			t.Fatal(err)
		}
		if err := s.land(t.Context(), "slow.txt"); err != nil {
			t.Fatal(err)
		}
		if n, err := d.Drain(t.Context(), 0); n != 1 || err != nil || d.Stats().Retrying != 1 {
			t.Fatalf("Drain() = %d, %v with %+v, want 1, nil and one retry waiting", n, err, d.Stats())
		}
		if err := os.WriteFile(path, full, 0o644); err != nil { // the writer finishes
			t.Fatal(err)
		}
		if n, err := dispatchertest.Settle(t, d); n != 3 || err != nil {
			t.Errorf("Settle() = %d, %v, want 3 (the retry, file.verified, file.archived), nil", n, err)
		}
		want := []Archived{{Name: "slow.txt", Path: filepath.Join(archive, "slow.txt")}}
		if got := dispatchertest.Payloads[Archived](t, &rec, topicArchived); !slices.Equal(got, want) {
			t.Errorf("archived %v, want %v", got, want)
		}
		if got := s.Index().Lookup("writer"); !slices.Equal(got, []string{"slow.txt"}) {
			t.Errorf("Lookup(writer) = %q, want slow.txt", got)
		}
	})
}

func TestBadFilesBecomeDeadLetters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, dir, archive := newService(t, dispatcher.ConstantBackoff(time.Second))
		d := s.Dispatcher()
		write(t, dir, "good.txt", withTrailer("fine\n"))
		write(t, dir, "bad.txt", corrupt("damaged\n"))
		write(t, dir, "cut.txt", []byte("never finished\n"))
		for _, name := range []string{"good.txt", "bad.txt", "cut.txt"} {
			if err := s.land(t.Context(), name); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		_, err := dispatchertest.Settle(t, d)
		if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrIncomplete) {
			t.Errorf("Settle() error = %v, want the corrupt and the incomplete file", err)
		}
		if waited := time.Since(start); waited < 2*time.Second {
			t.Errorf("Settle() took %v of fake time, want the two backoffs of cut.txt, 2s at least", waited)
		}

		dls := d.DeadLetters()
		reasons := map[string]string{}
		for _, dl := range dls {
			reasons[dl.Event.Key] = fmt.Sprintf("%s after %d: %v", dl.Subscriber, dl.Attempts, dl.Err)
		}
		h := sha256.Sum256([]byte("damaged\n"))
		want := map[string]string{
			"bad.txt": fmt.Sprintf("checksum after 1: filewatch: bad.txt is corrupt: checksum mismatch: the trailer says sha256 %x, the content hashes to %x",
				sha256.Sum256([]byte("damaged\n (before it was damaged)")), h),
			"cut.txt": `checksum after 3: filewatch: incomplete file: cut.txt has no checksum trailer (the last line must be "sha256 <64 hex digits>")`,
		}
		if len(reasons) != 2 || reasons["bad.txt"] != want["bad.txt"] || reasons["cut.txt"] != want["cut.txt"] {
			t.Errorf("dead letters:\n%s want:\n%q", dispatchertest.FormatDeadLetters(dls), want)
		}
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.Name != "bad.txt" {
			t.Errorf("Settle() error = %v, want a *CorruptError for bad.txt", err)
		}
		if got := files(t, dir); !slices.Equal(got, []string{"bad.txt", "cut.txt"}) {
			t.Errorf("left in the directory: %q, want the two bad files", got)
		}
		if got := files(t, archive); !slices.Equal(got, []string{"good.txt"}) {
			t.Errorf("archived: %q, want good.txt", got)
		}
	})
}

// TestEndToEnd runs the service on a real directory: fsnotify reports the
// files on its own goroutine, the dispatcher handles them on its workers.
// The test waits for the events on the Recorder, then stops the service,
// whose graceful shutdown finishes the cascades.
func TestEndToEnd(t *testing.T) {
	s, dir, archive := newService(t, dispatcher.ConstantBackoff(10*time.Millisecond))
	write(t, dir, "early.txt", withTrailer("the early bird\n")) // there before the watch: found by the scan
	var rec dispatchertest.Recorder
	// Subscribed after the checksum handler, so it records each
	// file.landed once the checksum's first call for it has returned.
	if _, err := s.Dispatcher().On(topicLanded, rec.Handle); err != nil {
		t.Fatal(err)
	}

	ctx, stop := context.WithCancel(t.Context())
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- s.Run(ctx) }()
	select {
	case <-s.Ready():
	case err := <-runErr:
		t.Fatalf("Run() returned %v before it was ready", err)
	}
	write(t, dir, "a.txt", withTrailer("hello world\n"))
	write(t, dir, "b.txt", withTrailer("goodbye world\n"))
	write(t, dir, "bad.txt", corrupt("hello corruption\n"))
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil { // a directory: not a file
		t.Fatal(err)
	}

	waitErr := rec.Wait(ctx, topicLanded, 4)
	stop()
	if err := <-runErr; err != nil {
		t.Errorf("Run() error = %v", err)
	}
	if waitErr != nil {
		t.Fatalf("%v; landed: %v", waitErr, rec.Events(topicLanded))
	}

	var landed []string
	for _, l := range dispatchertest.Payloads[Landed](t, &rec, topicLanded) {
		landed = append(landed, l.Name)
	}
	slices.Sort(landed)
	if want := []string{"a.txt", "b.txt", "bad.txt", "early.txt"}; !slices.Equal(landed, want) {
		t.Errorf("landed %q, want %q", landed, want)
	}
	if got := files(t, archive); !slices.Equal(got, []string{"a.txt", "b.txt", "early.txt"}) {
		t.Errorf("archived %q, want a.txt, b.txt, early.txt", got)
	}
	if got := s.Index().Lookup("world"); !slices.Equal(got, []string{"a.txt", "b.txt"}) {
		t.Errorf("Lookup(world) = %q, want a.txt, b.txt", got)
	}
	dls := s.Dispatcher().DeadLetters()
	if len(dls) != 1 || dls[0].Event.Key != "bad.txt" || !errors.Is(dls[0].Err, ErrCorrupt) || !strings.Contains(dls[0].Err.Error(), "checksum mismatch") {
		t.Errorf("dead letters:\n%s want bad.txt alone, corrupt", dispatchertest.FormatDeadLetters(dls))
	}
	if st := s.Dispatcher().Stats(); st.Queued != 0 || st.Retrying != 0 || st.Dropped != 0 {
		t.Errorf("Stats() after Run = %+v, want nothing queued, waiting or dropped", st)
	}
}
