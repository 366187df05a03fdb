// Package checksum computes the digest of an image's guest-visible
// content with blkhash's construction, so that a raw image, its qcow2 copy
// (compressed or not), a backing chain flattened or not, all give the same
// answer, equal to what blkhash's blksum prints for that content:
//
//	H( H(block 1) || … || H(block N) || le64(size) )
//
// Blocks are 64 KiB, the last one may be shorter; one digest algorithm is
// used inside and outside. Block status tells which runs read as zeroes:
// those are never read, each of their full blocks contributes the digest
// of a zero block, computed once. Data is read and hashed on every core in
// batches whose digests go into the outer hash in order.
package checksum

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"runtime"

	"golang.org/x/sync/errgroup"

	"qimg/image"
)

// BlockSize is blkhash's block size; changing it changes every checksum.
const BlockSize = 64 << 10

// batchSize is how much one worker reads and hashes at a time: a multiple
// of BlockSize, large enough to amortise a read, small enough that memory
// stays a few MiB per worker.
const batchSize = 1 << 20

// Options tune a checksum; the zero value is sha256 on every core.
type Options struct {
	Digest  string // a name of Digests; "" is sha256
	Workers int    // 0: one per core
	// Progress, when set, is told the bytes done of the bytes that count
	// (the guest size), in order.
	Progress func(done, total int64)
}

// job is one batch: a range of whole blocks (the last may be short) that
// either reads as zeroes or must be read.
type job struct {
	off, length int64
	zero        bool
	digests     []byte // filled by a worker for data batches
	done        chan struct{}
	err         error
}

// Sum returns the digest of n's guest content.
func Sum(ctx context.Context, n *image.Node, o Options) ([]byte, error) {
	newHash, err := Digest(o.Digest)
	if err != nil {
		return nil, err
	}
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	size := n.Size()
	zeroDigest := blockDigest(newHash, make([]byte, BlockSize))

	g, ctx := errgroup.WithContext(ctx)
	work := make(chan *job, workers)
	ordered := make(chan *job, 2*workers)
	g.Go(func() error {
		defer close(work)
		defer close(ordered)
		return produce(ctx, n, size, func(j *job) error {
			select {
			case ordered <- j:
			case <-ctx.Done():
				return ctx.Err()
			}
			if j.zero {
				return nil
			}
			select {
			case work <- j:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	})
	for range workers {
		g.Go(func() error {
			buf := make([]byte, batchSize)
			for j := range work {
				j.digests, j.err = hashBatch(n, newHash, zeroDigest, j, buf)
				close(j.done)
			}
			return nil
		})
	}
	outer := newHash()
	g.Go(func() error {
		var done int64
		for j := range ordered {
			if j.zero {
				writeZeroDigests(outer, zeroDigest, j.length)
			} else {
				select {
				case <-j.done:
				case <-ctx.Done():
					return ctx.Err()
				}
				if j.err != nil {
					return j.err
				}
				outer.Write(j.digests)
			}
			done += j.length
			if o.Progress != nil {
				o.Progress(done, size)
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var length [8]byte
	binary.LittleEndian.PutUint64(length[:], uint64(size))
	outer.Write(length[:])
	return outer.Sum(nil), nil
}

// produce walks the chain's block status and cuts it into batches on
// block boundaries: a run of whole zero blocks becomes one zero batch
// (however long), everything else data batches of at most batchSize.
func produce(ctx context.Context, n *image.Node, size int64, emit func(*job) error) error {
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		zeroEnd, err := zeroRunEnd(n, off, size)
		if err != nil {
			return err
		}
		// whole blocks of zeroes only: a short last block is hashed
		// from its bytes like any other
		if zeroBlocks := (zeroEnd - off) / BlockSize; zeroBlocks > 0 {
			length := zeroBlocks * BlockSize
			if err := emit(&job{off: off, length: length, zero: true}); err != nil {
				return err
			}
			off += length
			continue
		}
		length := min(int64(batchSize), size-off)
		if err := emit(&job{off: off, length: length, done: make(chan struct{})}); err != nil {
			return err
		}
		off += length
	}
	return nil
}

// zeroRunEnd is the end of the run of zeroes starting at off, as block
// status tells it (off itself when off does not read as zero).
func zeroRunEnd(n *image.Node, off, size int64) (int64, error) {
	end := off
	for end < size {
		e, err := n.BlockStatusChain(end, size-end)
		if err != nil {
			return 0, err
		}
		if !e.Zero {
			break
		}
		end = e.End()
	}
	return end, nil
}

// hashBatch reads a data batch and returns the digests of its blocks.
func hashBatch(n *image.Node, newHash func() hash.Hash, zeroDigest []byte, j *job, buf []byte) ([]byte, error) {
	data := buf[:j.length]
	if _, err := n.ReadAt(data, j.off); err != nil {
		return nil, fmt.Errorf("error while reading at byte %d: %w", j.off, err)
	}
	digests := make([]byte, 0, (len(data)+BlockSize-1)/BlockSize*len(zeroDigest))
	return appendBlockDigests(digests, newHash(), zeroDigest, data), nil
}

// appendBlockDigests appends the digests of data's blocks (the last may be
// short) to digests, with h; a whole zero block takes zeroDigest unhashed.
func appendBlockDigests(digests []byte, h hash.Hash, zeroDigest, data []byte) []byte {
	for len(data) > 0 {
		block := data[:min(BlockSize, len(data))]
		data = data[len(block):]
		if len(block) == BlockSize && image.IsZero(block) {
			digests = append(digests, zeroDigest...)
			continue
		}
		h.Reset()
		h.Write(block)
		digests = h.Sum(digests)
	}
	return digests
}

func blockDigest(newHash func() hash.Hash, block []byte) []byte {
	h := newHash()
	h.Write(block)
	return h.Sum(nil)
}

// writeZeroDigests adds the zero block's digest once per block of length,
// in large writes (a 1 TiB hole is 16 million digests).
func writeZeroDigests(outer hash.Hash, zeroDigest []byte, length int64) {
	const perWrite = 4096
	blocks := length / BlockSize
	run := bytes.Repeat(zeroDigest, int(min(blocks, perWrite)))
	for blocks > 0 {
		k := min(blocks, perWrite)
		outer.Write(run[:k*int64(len(zeroDigest))])
		blocks -= k
	}
}

// ErrUnknownDigest is returned for a digest name qimg does not know.
var ErrUnknownDigest = errors.New("unknown digest")
