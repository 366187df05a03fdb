package checksum

import (
	"encoding/binary"
	"fmt"
	"hash"
	"sync"
)

// Stream computes the checksum of content that a copy already holds in
// memory (convert --checksum), so that nothing is read twice: the copy's
// workers digest the blocks of their parts concurrently (Blocks), then
// hand each part over by its sequence number (Put), in any order; the
// parts go into the outer hash in sequence order. Parts start on block
// boundaries.
type Stream struct {
	newHash    func() hash.Hash
	zeroDigest []byte
	hashes     sync.Pool

	mu      sync.Mutex
	outer   hash.Hash
	next    uint64
	pending map[uint64]streamPart
	size    int64
}

type streamPart struct {
	runs  [][]byte
	zeros []int64
}

// NewStream starts a checksum with the named digest ("" is sha256).
func NewStream(digest string) (*Stream, error) {
	newHash, err := Digest(digest)
	if err != nil {
		return nil, err
	}
	s := &Stream{newHash: newHash, outer: newHash(), pending: map[uint64]streamPart{}}
	s.zeroDigest = blockDigest(newHash, make([]byte, BlockSize))
	s.hashes.New = func() any { return newHash() }
	return s, nil
}

// BlockSize is the size of the blocks Blocks digests.
func (s *Stream) BlockSize() int64 { return BlockSize }

// Blocks returns the digests of data's blocks, appended to dst; only the
// content's last block may be short. Safe for concurrent use.
func (s *Stream) Blocks(dst, data []byte) []byte {
	h := s.hashes.Get().(hash.Hash)
	defer s.hashes.Put(h)
	return appendBlockDigests(dst, h, s.zeroDigest, data)
}

// Put hands over part seq (numbered from 0 in content order): runs[i]
// are block digests from Blocks, each followed by zeros[i] whole zero
// blocks. size is the bytes the part covers.
func (s *Stream) Put(seq uint64, size int64, runs [][]byte, zeros []int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.size += size
	s.pending[seq] = streamPart{runs, zeros}
	for {
		p, ok := s.pending[s.next]
		if !ok {
			return
		}
		delete(s.pending, s.next)
		s.next++
		for i, r := range p.runs {
			s.outer.Write(r)
			writeZeroDigests(s.outer, s.zeroDigest, p.zeros[i]*BlockSize)
		}
	}
}

// Sum is the checksum of the content put so far; every part must be in.
func (s *Stream) Sum() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) > 0 {
		return nil, fmt.Errorf("checksum: %d parts are missing before part %d", len(s.pending), s.next)
	}
	var length [8]byte
	binary.LittleEndian.PutUint64(length[:], uint64(s.size))
	s.outer.Write(length[:])
	return s.outer.Sum(nil), nil
}
