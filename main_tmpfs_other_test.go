//go:build !linux

package main

import "github.com/rogpeppe/go-internal/testscript"

// canMountTmpfs: the tmpfs scripts need Linux.
func canMountTmpfs() bool { return false }

func cmdTmpfs(ts *testscript.TestScript, neg bool, args []string) {
	ts.Fatalf("tmpfs: Linux only")
}
