package dispatchertest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ringbus/ringbus/dispatcher"
	"github.com/ringbus/ringbus/dispatcher/dispatchertest"
)

func TestNoDeadLettersReportsEachOneAtCleanup(t *testing.T) {
	fake := dispatchertest.NewFakeTB(t.Context())
	d := dispatchertest.New(fake)
	dispatchertest.NoDeadLetters(fake, d)
	on(t, d, "mail.send", func(context.Context, dispatcher.Event) error {
		return errors.New("smtp: 451 try later")
	}, dispatcher.WithName("mailer"))
	on(t, d, "mail.send", func(context.Context, dispatcher.Event) error {
		panic("nil map in the template")
	}, dispatcher.WithName("renderer"))
	if err := d.EmitEvent(t.Context(), dispatcher.Event{Topic: "mail.send", Key: "user-7", Payload: "welcome"}); err != nil {
		t.Fatal(err)
	}
	dispatchertest.Settle(t, d)
	if errs := fake.Errors(); len(errs) != 0 {
		t.Fatalf("failures reported before the cleanup: %q", errs)
	}

	fake.RunCleanups()
	errs := fake.Errors()
	if len(errs) != 1 {
		t.Fatalf("NoDeadLetters reported %d failures (%q), want 1", len(errs), errs)
	}
	for _, want := range []string{
		"2 dead letter(s) left",
		`event 1 "mail.send" key "user-7" for subscriber "mailer" after 1 attempt(s): smtp: 451 try later`,
		`for subscriber "renderer" after 1 attempt(s): dispatcher: handler panicked: nil map in the template`,
		"payload (string): welcome",
		"panic stack:",
	} {
		if !strings.Contains(errs[0], want) {
			t.Errorf("NoDeadLetters report lacks %q; it reads:\n%s", want, errs[0])
		}
	}
}

func TestNoDeadLettersIsQuietWithoutThem(t *testing.T) {
	fake := dispatchertest.NewFakeTB(t.Context())
	d := dispatchertest.New(fake)
	dispatchertest.NoDeadLetters(fake, d)
	on(t, d, "ok", func(context.Context, dispatcher.Event) error { return nil })
	emit(t, d, "ok", nil)
	dispatchertest.Settle(t, d)
	fake.RunCleanups()
	if errs, fatals := fake.Errors(), fake.Fatals(); len(errs)+len(fatals) != 0 {
		t.Errorf("NoDeadLetters reported %q %q, want nothing", errs, fatals)
	}
}

func TestFormatDeadLettersIsBounded(t *testing.T) {
	var dls []dispatcher.DeadLetter
	for i := range 12 {
		dls = append(dls, dispatcher.DeadLetter{
			Event:      dispatcher.Event{ID: uint64(i + 1), Topic: "big", Payload: strings.Repeat("x", 500)},
			Err:        fmt.Errorf("failure %d", i+1),
			Subscriber: "s",
			Attempts:   1,
		})
	}
	got := dispatchertest.FormatDeadLetters(dls)
	if !strings.Contains(got, "failure 10\n") || strings.Contains(got, "failure 11") || !strings.Contains(got, "... and 2 more") {
		t.Errorf("FormatDeadLetters(12) shows other than the first 10 and a count of the rest:\n%s", got)
	}
	if strings.Contains(got, strings.Repeat("x", 201)) || !strings.Contains(got, strings.Repeat("x", 200)+"...") {
		t.Errorf("FormatDeadLetters does not cut a 500-byte payload at 200 bytes:\n%s", got)
	}
}

func TestNewReportsABadOption(t *testing.T) {
	fake := dispatchertest.NewFakeTB(t.Context())
	if d := dispatchertest.New(fake, dispatcher.WithCapacity(-1)); d != nil {
		t.Errorf("New(WithCapacity(-1)) = %v, want nil", d)
	}
	if f := fake.Fatals(); len(f) != 1 || !strings.Contains(f[0], dispatcher.ErrInvalidOption.Error()) {
		t.Errorf("New(WithCapacity(-1)) reported %q, want ErrInvalidOption", f)
	}
}
