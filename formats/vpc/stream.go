package vpc

import (
	"encoding/binary"
	"time"

	"qimg/image"
)

// Writing a new image onto a write-once node (an S3 upload), in file
// order. A fixed image is its data, then the footer. A dynamic image
// starts with the footer, its header and the BAT, which fit in the
// upload's first part (at most 4 MiB of BAT for VHD's 2040 GiB; the part
// is kept in memory and sent last), so the BAT entries can be set as the
// blocks go out, each after the last, in the order the data comes; the
// footer copy follows the last block once the image is complete.

// inOrder: every vpc image can be laid out in file order.
func inOrder(image.Options) error { return nil }

// createInOrder starts a new image on a write-once node that a convert
// fills next. The node is sized first for the largest image, which sets
// the upload's part size. A fixed image keeps its footer at offset 0
// meanwhile (the first part stays in memory): the open that follows
// moves it to the end.
func createInOrder(c *image.CreateContext, p *createParams, f []byte) error {
	if p.fixed {
		if err := c.File.Truncate(p.size+footerSize, image.PreallocOff); err != nil {
			return err
		}
		_, err := c.File.WriteAt(f, 0)
		return err
	}
	entries := (p.size/512 + dynamicBlockSize/512 - 1) / (dynamicBlockSize / 512)
	bound := 1536 + (entries*4+511)&^511 + entries*(512+dynamicBlockSize) + footerSize
	if err := c.File.Truncate(bound, image.PreallocOff); err != nil {
		return err
	}
	return writeDynamic(c.File, f, p.size/512)
}

// streamImage is a vpc image written in file order: blocks are appended
// without moving the footer, which Complete writes at the end.
type streamImage struct {
	*Image
}

// openInOrder opens the image create just started for its writer.
func openInOrder(img *Image) (*streamImage, error) {
	img.writeOnce = true
	if img.fixed {
		// the footer create kept at offset 0 goes to the end
		if err := img.file.WriteZeroes(0, footerSize, false); err != nil {
			return nil, err
		}
	}
	return &streamImage{img}, nil
}

// Complete writes the footer after the data or the last block, then
// completes the node's storage: only now does the image appear.
func (s *streamImage) Complete() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	end := s.freeOffset
	if s.fixed {
		end = s.size
	}
	f := s.footer.raw
	// the time the image was finished, as a local image's creation time
	binary.BigEndian.PutUint32(f[24:], uint32(time.Now().Unix()-timestampBase))
	binary.BigEndian.PutUint32(f[offChecksum:], checksum(f[:], offChecksum))
	if _, err := s.file.WriteAt(f[:], end); err != nil {
		return err
	}
	if !s.fixed {
		// the copy at the head says the same
		if _, err := s.file.WriteAt(f[:], 0); err != nil {
			return err
		}
	}
	return s.file.Complete()
}
