package shardcount_test

import (
	"sync"
	"testing"

	"github.com/ringbus/ringbus/internal/shardcount"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestCounterSumsConcurrentAdds(t *testing.T) {
	const goroutines, each = 8, 10_000
	var c shardcount.Counter
	if got := c.Load(); got != 0 {
		t.Fatalf("zero Counter: Load() = %d, want 0", got)
	}
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				c.Add()
			}
		})
	}
	wg.Wait()
	if got := c.Load(); got != goroutines*each {
		t.Errorf("Load() = %d, want %d", got, goroutines*each)
	}
}
