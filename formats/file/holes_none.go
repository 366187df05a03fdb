//go:build qimg_noholes || !(linux || darwin || freebsd || (windows && !qimg_portable))

package file

// Without a way to ask the file system for holes (or with the build tag
// qimg_noholes, which tests this path on Linux), every byte is data: map
// shows one data extent where qemu-img shows holes as zeroes, and convert
// reads the holes and finds their zeroes itself.

// findsHoles: BlockStatus tells holes from data.
const findsHoles = false

// findData reports that the file system cannot tell.
func (d *File) findData(int64) (data, hole int64, ok bool) { return 0, 0, false }
