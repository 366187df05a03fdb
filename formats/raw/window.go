package raw

import "qimg/image"

// openOptions are raw's own options: offset and size show a window of the
// file as the image (a partition, a disk inside an archive).
var openOptions = []image.OptionSpec{
	{Name: "offset", Type: image.OptSize},
	{Name: "size", Type: image.OptSize},
}

// window is the part of the file the image is; size is -1 when not given
// (the image runs to the end of the file and resizes with it).
type window struct {
	offset, size int64
}

// readWindow reads the offset and size options against the file's size,
// in qemu's words (raw_apply_options).
func readWindow(opts map[string]string, fileSize int64) (window, error) {
	w := window{size: -1}
	if v, ok := opts["offset"]; ok {
		n, err := image.ParseSize(v)
		if err != nil {
			return w, err
		}
		w.offset = n
	}
	if v, ok := opts["size"]; ok {
		n, err := image.ParseSize(v)
		if err != nil {
			return w, err
		}
		w.size = n
	}
	if w.offset > fileSize {
		return w, image.Errorf(nil, "Offset (%d) cannot be greater than size of the containing file (%d)", w.offset, fileSize)
	}
	if w.size >= 0 && fileSize-w.offset < w.size {
		return w, image.Errorf(nil, "The sum of offset (%d) and size (%d) has to be smaller or equal to the  actual size of the containing file (%d)",
			w.offset, w.size, fileSize)
	}
	if w.size >= 0 && w.size%512 != 0 {
		return w, image.Errorf(nil, "Specified size is not multiple of 512")
	}
	return w, nil
}
