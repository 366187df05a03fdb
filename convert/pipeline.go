package convert

import (
	"context"

	"golang.org/x/sync/errgroup"
)

// Pipeline runs produce, which sends jobs, and workers goroutines that
// execute them. The first error cancels the context both see, stops the
// rest and is the one returned. Commit and rebase run their copies on it.
func Pipeline[J any](ctx context.Context, workers int,
	produce func(ctx context.Context, jobs chan<- J) error,
	execute func(ctx context.Context, j J) error) error {
	g, ctx := errgroup.WithContext(ctx)
	jobs := make(chan J, workers)
	g.Go(func() error {
		defer close(jobs)
		return produce(ctx, jobs)
	})
	for range workers {
		g.Go(func() error {
			for j := range jobs {
				if err := execute(ctx, j); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}
