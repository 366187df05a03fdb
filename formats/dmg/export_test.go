package dmg

// ResetWarnings forgets the once-per-process warnings, for tests that
// run several commands in one process.
func ResetWarnings() {
	warnedLzfse.Store(false)
	warnedUnknown.Store(false)
}
