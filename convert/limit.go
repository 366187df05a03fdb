package convert

import (
	"context"
	"sync"
	"time"
)

// RateLimiter bounds a write rate (-r) in bytes per second; the copy
// engine and commit share it.
type RateLimiter struct {
	mu   sync.Mutex
	rate int64
	next time.Time
}

// NewRateLimiter returns a limiter for rate bytes per second, or nil (no
// limit) when rate is not positive.
func NewRateLimiter(rate int64) *RateLimiter {
	if rate <= 0 {
		return nil
	}
	return &RateLimiter{rate: rate}
}

// Wait delays the caller so that the bytes written so far, n included, do
// not exceed the rate. A nil limiter never waits.
func (l *RateLimiter) Wait(ctx context.Context, n int64) error {
	if l == nil || n <= 0 {
		return nil
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	start := l.next
	l.next = l.next.Add(time.Duration(float64(n) / float64(l.rate) * float64(time.Second)))
	l.mu.Unlock()
	d := time.Until(start)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
