package qcow2

// Bitmap directory entry flags and layout ("=== Bitmap directory ===").
const (
	bmeFlagInUse       = 1 << 0
	bmeFlagAuto        = 1 << 1
	bmeEntryHeaderSize = 24
	bmeMaxNameSize     = 1023
)

// bitmapInfo is QAPI's Qcow2BitmapInfo.
type bitmapInfo struct {
	Name        string   `json:"name"`
	Granularity int64    `json:"granularity"`
	Flags       []string `json:"flags"`
}

func bitmapInfos(entries []bitmapDirEntry) []bitmapInfo {
	out := make([]bitmapInfo, 0, len(entries))
	for _, e := range entries {
		bi := bitmapInfo{Name: e.name, Granularity: int64(1) << (e.granularityBits & 63), Flags: []string{}}
		if e.flags&bmeFlagInUse != 0 {
			bi.Flags = append(bi.Flags, "in-use")
		}
		if e.flags&bmeFlagAuto != 0 {
			bi.Flags = append(bi.Flags, "auto")
		}
		out = append(out, bi)
	}
	return out
}
