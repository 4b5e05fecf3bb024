//go:build stress

package keyq_test

import (
	"fmt"
	"testing"
)

// Long runs of the model: go test -race -tags stress -run Stress.

// TestStressModel is TestModel with many more items and goroutines.
func TestStressModel(t *testing.T) {
	perProducer := 100_000
	if testing.Short() {
		perProducer = 10_000
	}
	for _, workers := range []int{8, 32} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			testModel(t, workers, perProducer)
		})
	}
}
