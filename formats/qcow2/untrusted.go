package qcow2

import (
	"bufio"
	"io"

	"qimg/image"
)

// An untrusted image (--untrusted) is checked before it is read: a small
// file whose L2 entries all name one data cluster, or whose L1 entries
// all name one L2 table, reads as terabytes of data and maps to billions
// of lines. Its references must add up: the check's count of every
// reference agrees with the stored refcounts (no corruption; leaks are
// harmless), and the active view names no host cluster twice, so what a
// reader gets out of it is bounded by the file's size. The count reads
// the metadata once, as check does, when the image is opened.

// verifyReferences refuses an image whose references do not add up.
func (q *Image) verifyReferences() error {
	q.meta.Lock()
	defer q.meta.Unlock()
	c := &checker{q: q, log: bufio.NewWriter(io.Discard), cs: q.clusterSize, duplicate: -1}
	if err := c.prepare(); err != nil {
		return err
	}
	c.activeSeen = newBitset(c.refs.len() + 1)
	if err := c.calculate(false); err != nil {
		return untrustedError("its metadata cannot be read: %v", err)
	}
	if c.duplicate >= 0 {
		return untrustedError("host cluster %#x is referenced more than once", c.duplicate)
	}
	c.compare(0)
	if n := c.res.corruptions + c.res.checkErrors; n > 0 {
		if q.h.incompatible&incompatDirty != 0 {
			return untrustedError("its refcounts are not up to date (lazy refcounts; check -r all repairs them)")
		}
		return untrustedError("its references do not match its refcounts (%d errors; see check)", n)
	}
	return nil
}

func untrustedError(format string, args ...any) error {
	return image.Errorf(image.ErrCorrupt, "refused as an untrusted image: "+format, args...)
}

// noteActive records a host cluster the active view names (an L2 table
// or a data cluster) and the first one named twice.
func (c *checker) noteActive(k int64) {
	if c.activeSeen == nil || c.duplicate >= 0 || k >= int64(len(c.activeSeen))*64 {
		return
	}
	if c.activeSeen.has(k) {
		c.duplicate = k << c.q.clusterBits
		return
	}
	c.activeSeen.set(k)
}
