//go:build stress

package natsbridge_test

// crashKills is how many times TestCrashKill9 kills its child.
const crashKills = 40
