package image

// MeasureInfo is the JSON shape of qemu-img measure (QAPI
// BlockMeasureInfo), in QAPI field order.
type MeasureInfo struct {
	Required       int64  `json:"required"`
	FullyAllocated int64  `json:"fully-allocated"`
	Bitmaps        *int64 `json:"bitmaps,omitempty"`
}

// MeasureContext is what a format's Measure gets: the -o options of the
// image to be made (validated against CreateOptions) and either the size
// of an empty image or the source whose content it would hold.
type MeasureContext struct {
	Options Options
	Size    int64 // with no Source
	Source  *Node // nil for --size
}

// Measure computes the file size an image of format would need.
func Measure(format string, m *MeasureContext) (*MeasureInfo, error) {
	f, ok := Lookup(format)
	if !ok {
		return nil, Errorf(ErrUnsupported, "Unknown file format '%s'", format)
	}
	if f.Measure == nil {
		return nil, Errorf(ErrUnsupported, "Block driver '%s' does not support size measurement", format)
	}
	if err := m.Options.Validate(f.CreateOptions); err != nil {
		return nil, err
	}
	return f.Measure(m)
}
