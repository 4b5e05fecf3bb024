//go:build stress

package dispatcher_test

import "testing"

// TestModelStress is TestModel with many more rounds of the matrix, each
// with its own seeds, and longer producers: go test -race -tags stress
// -run TestModelStress.
func TestModelStress(t *testing.T) {
	sc := mdScale{rounds: 20, ops: 150}
	if testing.Short() {
		sc.rounds = 4
	}
	mdMatrix(t, sc)
}
