package cmd

import "os"

// notifyProgressRequest: Windows has no SIGUSR1, nor does qemu-img there.
func notifyProgressRequest(chan os.Signal) {}
