package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `goos: linux
goarch: amd64
pkg: github.com/ringbus/ringbus/benchmarks
cpu: AMD EPYC
BenchmarkQueue/shape=SPSC/producers=1/consumers=1/impl=ringbus-2   	 100	        20.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkQueue/shape=SPSC/producers=1/consumers=1/impl=ringbus-2   	 100	        30.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkQueue/shape=SPSC/producers=1/consumers=1/impl=ringbus-2   	 100	        90.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkQueue/shape=SPSC/producers=1/consumers=1/impl=chan-2      	 100	        60.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkDispatch/subs=10/producers=4/impl=ringbus-2               	 100	       100 ns/op
BenchmarkDispatch/subs=10/producers=4/impl=watermill-2             	 100	     10000 ns/op
BenchmarkOther-2                                                   	 100	        1.0 ns/op
PASS
`

func TestParse(t *testing.T) {
	fams, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(fams) != 2 || fams[0].name != "Queue" || fams[1].name != "Dispatch" {
		t.Fatalf("parse: got %d families, want Queue and Dispatch", len(fams))
	}
	q := fams[0]
	tests := []struct {
		give string
		want float64
	}{
		{"ringbus", 30}, // the median of 20, 30, 90
		{"chan", 60},
	}
	for _, tt := range tests {
		if got, ok := q.median("shape=SPSC/producers=1/consumers=1", tt.give); !ok || got != tt.want {
			t.Errorf("median(SPSC, %s) = %v, %v, want %v, true", tt.give, got, ok, tt.want)
		}
	}
	labels := []struct{ give, want string }{
		{"shape=SPSC/producers=1/consumers=1", "SPSC"},
		{"shape=MPSC/producers=4/consumers=1", "MPSC 4:1"},
		{"subs=10/producers=1", "10 subs, 1 producer"},
		{"subs=1", "1 subscriber"},
		{"consumer=router/subs=10", "consumer=router, subs=10"},
	}
	for _, tt := range labels {
		if got := label(tt.give); got != tt.want {
			t.Errorf("label(%q) = %q, want %q", tt.give, got, tt.want)
		}
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "results.txt")
	if err := os.WriteFile(in, []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"chart.svg", "chart.png"} {
		ratios := filepath.Join(dir, name+".md")
		if err := run(in, filepath.Join(dir, name), ratios, "caption"); err != nil {
			t.Fatalf("run(%s) = %v", name, err)
		}
		md, err := os.ReadFile(ratios)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"| SPSC | 30 ns | 60 ns (2.00×) |", "| 10 subs, 4 producers | 100 ns | 10 µs (100.00×) |"} {
			if !strings.Contains(string(md), want) {
				t.Errorf("ratios lack %q:\n%s", want, md)
			}
		}
	}
	if err := run(in, filepath.Join(dir, "chart.gif"), "", ""); err == nil {
		t.Errorf("run(chart.gif) = nil, want an error for the unknown format")
	}
}
