//go:build unix

package cmd

import (
	"os"
	"os/signal"
	"syscall"
)

// notifyProgressRequest sends SIGUSR1 to c: qemu-img prints one progress
// line when it gets it.
func notifyProgressRequest(c chan os.Signal) { signal.Notify(c, syscall.SIGUSR1) }
