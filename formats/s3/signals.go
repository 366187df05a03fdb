package s3

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// abortTimeout bounds the abort of an upload on the way out.
const abortTimeout = 30 * time.Second

// An interrupted or terminated process aborts its uploads before it
// dies, so that no parts stay behind in the bucket; the signal is then
// raised again, and the process ends as it would have.
var (
	watchMu  sync.Mutex
	watched  = map[*Upload]bool{}
	watching chan os.Signal
)

func watchSignals(u *Upload) {
	watchMu.Lock()
	defer watchMu.Unlock()
	watched[u] = true
	if watching == nil {
		watching = make(chan os.Signal, 1)
		signal.Notify(watching, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
		go abortOnSignal(watching)
	}
}

func unwatch(u *Upload) {
	watchMu.Lock()
	defer watchMu.Unlock()
	delete(watched, u)
}

func abortOnSignal(c chan os.Signal) {
	sig := <-c
	watchMu.Lock()
	var uploads []*Upload
	for u := range watched {
		uploads = append(uploads, u)
	}
	watchMu.Unlock()
	var wg sync.WaitGroup
	for _, u := range uploads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.Close()
		}()
	}
	wg.Wait()
	signal.Reset(sig)
	if p, err := os.FindProcess(os.Getpid()); err == nil {
		p.Signal(sig)
	}
	time.Sleep(time.Second)
	os.Exit(1)
}
