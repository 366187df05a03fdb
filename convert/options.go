// Package convert is the streaming block-copy engine behind convert, dd,
// commit and rebase: a producer walks the block status of the source
// chain, workers read, find zero runs and compress, and a writer stores
// the result in order (or the workers themselves, out of order). Buffers
// come from a bounded pool, so memory does not grow with the image.
// Commit (Copy.IntoBase) and rebase (Copy.Rebase) are modes of one Copy.
package convert

import (
	"qimg/image"
)

// Limits and defaults, as qemu-img's.
const (
	DefaultWorkers = 8
	MaxWorkers     = 16
	// DefaultSparseSize is -S: zero runs of at least this many bytes
	// (aligned to it) are left unallocated.
	DefaultSparseSize = 4096
	// MaxSparseSize is qemu-img's upper bound for -S (its buffer size).
	MaxSparseSize = 16 << 20
	sectorSize    = 512
	// DefaultChunk is the largest piece of data one worker handles at a
	// time; the pool holds a few of them per worker.
	DefaultChunk = 2 << 20
)

// Options are the engine's knobs: what qemu-img convert's -m, -W, -S, -c,
// -C, -r and --salvage say. The zero value plus Validate gives qemu-img's
// defaults.
type Options struct {
	// Workers (-m) is the number of parallel workers, 1..16; 0 means 8.
	Workers int
	// OutOfOrder (-W) lets workers write as soon as their data is ready.
	OutOfOrder bool
	// SparseSize (-S) is the granularity of zero detection in bytes; a
	// negative value means the default (4 KiB) and 0 turns detection off
	// (the target is fully allocated).
	SparseSize int64
	// SparseSizeGiven says -S appeared on the command line (copy offload
	// refuses it, as qemu-img does).
	SparseSizeGiven bool
	// Compress (-c) writes clusters compressed where the target can.
	Compress bool
	// CopyOffload (-C) copies data extents with copy_file_range instead of
	// reading and writing them, and skips zero detection.
	CopyOffload bool
	// RateLimit (-r) bounds the bytes written per second; 0: none.
	RateLimit int64
	// Salvage turns read errors into zeroes, with a warning each.
	Salvage bool
	// ChunkSize is the largest extent one worker handles; 0: 2 MiB. It is
	// rounded up to the target's cluster size.
	ChunkSize int64

	// Progress, when set, is called after every completed piece with
	// the bytes done and the total that counts (data, and zeroes with -S
	// 0), as qemu-img measures progress. Calls are serialised.
	Progress func(done, total int64)
	// Warn, when set, receives one-line warnings (salvaged read errors).
	Warn func(msg string)
	// Digest, when set, receives the copied content for a checksum made
	// in the same pass (convert --checksum): nothing is read twice.
	Digest Digester
}

// Digester digests the content a copy writes, block by block, from the
// workers' buffers (checksum.Stream is one).
type Digester interface {
	// BlockSize is the block the digests are made of; jobs start on
	// block boundaries.
	BlockSize() int64
	// Blocks appends the digests of data's blocks to dst; only the
	// content's last block may be short. Called concurrently.
	Blocks(dst, data []byte) []byte
	// Put hands over job seq (numbered from 0 in content order), size
	// bytes: runs[i] are digests from Blocks, each followed by zeros[i]
	// whole zero blocks. Jobs come in any order.
	Put(seq uint64, size int64, runs [][]byte, zeros []int64)
}

// Validate checks the options with qemu-img's wording and fills defaults.
func (o *Options) Validate() error {
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if o.Workers < 1 || o.Workers > MaxWorkers {
		return image.Errorf(nil, "Invalid number of coroutines. Allowed number of coroutines is between 1 and %d", MaxWorkers)
	}
	if o.SparseSize < 0 {
		o.SparseSize = DefaultSparseSize
	}
	if o.SparseSize%sectorSize != 0 || o.SparseSize > MaxSparseSize {
		return image.Errorf(nil, "Invalid buffer size for sparse output specified. Valid sizes are multiples of %d up to %d. Select 0 to disable sparse detection (fully allocates output).", sectorSize, MaxSparseSize)
	}
	if o.CopyOffload && o.Compress {
		return image.Errorf(nil, "Cannot enable copy offloading when -c is used")
	}
	if o.CopyOffload && o.SparseSizeGiven {
		return image.Errorf(nil, "Cannot enable copy offloading when -S is used")
	}
	if o.CopyOffload && o.Salvage {
		return image.Errorf(nil, "Cannot use copy offloading in salvaging mode")
	}
	if o.Digest != nil && o.CopyOffload {
		return image.Errorf(nil, "Cannot compute a checksum when copy offloading is used (-C)")
	}
	if o.RateLimit < 0 {
		return image.Errorf(nil, "Invalid rate limit specified")
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunk
	}
	return nil
}
