package natsbridge_test

// crashChild is replaced below.
func crashChild() bool { return false }
