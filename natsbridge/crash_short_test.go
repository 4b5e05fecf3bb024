//go:build !stress

package natsbridge_test

// crashKills is how many times TestCrashKill9 kills its child: a few in
// the normal run, at least 30 under the stress tag.
const crashKills = 4
