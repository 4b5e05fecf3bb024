package topic

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const notAllowed = " is not allowed (tokens are ASCII letters, digits, '_' and '-')"

func TestCheck(t *testing.T) {
	tests := []struct {
		give string
		want string // the Reason; "" for a valid topic
	}{
		{give: "a"},
		{give: "run.finished"},
		{give: "orders.eu-west_1.created"},
		{give: "A-Z_a-z_0-9"},
		{give: "_.-.0"},
		{give: "a.b.c.d.e.f.g.h.i.j"},
		{give: strings.Repeat("a", MaxLen)},
		{give: strings.Repeat("a.", MaxLen/2) + "a"},

		{give: "", want: "empty topic"},
		{give: strings.Repeat("a", MaxLen+1), want: "256 bytes, more than the limit of 255"},
		{give: ".", want: "'.' at 0 leaves an empty token"},
		{give: ".a", want: "'.' at 0 leaves an empty token"},
		{give: "a.", want: "'.' at 1 leaves an empty token"},
		{give: "a..b", want: "'.' at 2 leaves an empty token"},
		{give: "orders.eu..created", want: "'.' at 10 leaves an empty token"},
		{give: "order placed", want: "byte ' ' at 5" + notAllowed},
		{give: "order/placed", want: "byte '/' at 5" + notAllowed},
		{give: "a,b", want: "byte ',' at 1" + notAllowed},
		{give: "$SYS.x", want: "byte '$' at 0" + notAllowed},
		{give: "a\x00b", want: `byte '\x00' at 1` + notAllowed},
		{give: "orders.eu\x7f", want: `byte '\x7f' at 9` + notAllowed},
		{give: "order.#", want: "byte '#' at 6" + notAllowed + "; '>' is the multi-token wildcard, in patterns"},
		{give: "ünï", want: "non-ASCII character 'ü' at 0" + notAllowed},
		{give: "orders.ünï", want: "non-ASCII character 'ü' at 7" + notAllowed},
		{give: "a\xffb", want: "byte 0xff at 1 (not UTF-8)" + notAllowed},
		{give: "*", want: "wildcard '*' at 0 is not allowed in an emitted topic"},
		{give: "run.>", want: "wildcard '>' at 4 is not allowed in an emitted topic"},
		{give: "orders.*.created", want: "wildcard '*' at 7 is not allowed in an emitted topic"},
		{give: "a*b", want: "wildcard '*' at 1 is not allowed in an emitted topic"},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.give), func(t *testing.T) {
			err := Check(tt.give)
			if tt.want == "" {
				if err != nil {
					t.Errorf("Check(%q) = %v, want nil", tt.give, err)
				}
				return
			}
			checkError(t, "Check", tt.give, err, tt.want)
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		give       string
		wantTokens []string
		wantWild   bool
		wantErr    string // the Reason
	}{
		{give: "a", wantTokens: []string{"a"}},
		{give: "orders.eu-west_1.created", wantTokens: []string{"orders", "eu-west_1", "created"}},
		{give: "*", wantTokens: []string{"*"}, wantWild: true},
		{give: ">", wantTokens: []string{">"}, wantWild: true},
		{give: "run.*", wantTokens: []string{"run", "*"}, wantWild: true},
		{give: "run.>", wantTokens: []string{"run", ">"}, wantWild: true},
		{give: "*.*", wantTokens: []string{"*", "*"}, wantWild: true},
		{give: "*.>", wantTokens: []string{"*", ">"}, wantWild: true},
		{give: "a.*.c.>", wantTokens: []string{"a", "*", "c", ">"}, wantWild: true},

		{give: "", wantErr: "empty pattern"},
		{give: strings.Repeat("a", MaxLen-1) + ".>", wantErr: "256 bytes, more than the limit of 255"},
		{give: ".", wantErr: "'.' at 0 leaves an empty token"},
		{give: "a.", wantErr: "'.' at 1 leaves an empty token"},
		{give: "a..b", wantErr: "'.' at 2 leaves an empty token"},
		{give: "*.", wantErr: "'.' at 1 leaves an empty token"},
		{give: "a*b", wantErr: "wildcard '*' at 1 must be a whole token"},
		{give: "a>", wantErr: "wildcard '>' at 1 must be a whole token"},
		{give: ">a", wantErr: "wildcard '>' at 0 must be a whole token"},
		{give: "**", wantErr: "wildcard '*' at 0 must be a whole token"},
		{give: "*>", wantErr: "wildcard '*' at 0 must be a whole token"},
		{give: "a.b*", wantErr: "wildcard '*' at 3 must be a whole token"},
		{give: ">.a", wantErr: "wildcard '>' at 0 must be the last token"},
		{give: ">.>", wantErr: "wildcard '>' at 0 must be the last token"},
		{give: "a.>.b", wantErr: "wildcard '>' at 2 must be the last token"},
		{give: "order placed", wantErr: "byte ' ' at 5" + notAllowed},
		{give: "order.#", wantErr: "byte '#' at 6" + notAllowed + "; '>' is the multi-token wildcard, in patterns"},
		{give: "orders.+", wantErr: "byte '+' at 7" + notAllowed},
		{give: "ü.*", wantErr: "non-ASCII character 'ü' at 0" + notAllowed},
	}
	for _, tt := range tests {
		t.Run(strconv.Quote(tt.give), func(t *testing.T) {
			got, err := Parse(tt.give)
			if tt.wantErr != "" {
				checkError(t, "Parse", tt.give, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q) error = %v, want nil", tt.give, err)
			}
			if got.String() != tt.give || !slices.Equal(got.tokens, tt.wantTokens) || got.Wild() != tt.wantWild {
				t.Errorf("Parse(%q) = %q, tokens %q, Wild %v; want %q, %q, %v",
					tt.give, got, got.tokens, got.Wild(), tt.give, tt.wantTokens, tt.wantWild)
			}
		})
	}
}

// checkError checks that err, returned by fn for give, is an *Error for
// give with Reason want.
func checkError(t *testing.T, fn, give string, err error, want string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%s(%q) = %v, want an *Error", fn, give, err)
	}
	if e.Input != give || e.Reason != want {
		t.Errorf("%s(%q) = *Error{%q, %q}, want *Error{%q, %q}", fn, give, e.Input, e.Reason, give, want)
	}
	if got, wantMsg := err.Error(), strconv.Quote(give)+": "+want; got != wantMsg {
		t.Errorf("%s(%q).Error() = %q, want %q", fn, give, got, wantMsg)
	}
}

func TestCheckAllocs(t *testing.T) {
	for _, give := range []string{"a.b", "orders.eu.v1", "orders.eu-west_1.created"} {
		if n := testing.AllocsPerRun(100, func() {
			if err := Check(give); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("Check(%q) allocs = %v, want 0", give, n)
		}
	}
}
