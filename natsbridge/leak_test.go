package natsbridge_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if crashChild() {
		return // the crash test's child: killed before it gets here
	}
	goleak.VerifyTestMain(m)
}
