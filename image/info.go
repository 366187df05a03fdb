package image

// Info is the JSON shape of `qemu-img info --output=json` (QAPI ImageInfo),
// fields in QAPI order: that order decides QDict collisions when printed.
type Info struct {
	Filename              string          `json:"filename"`
	Format                string          `json:"format"`
	DirtyFlag             *bool           `json:"dirty-flag,omitempty"`
	ActualSize            *int64          `json:"actual-size,omitempty"`
	VirtualSize           int64           `json:"virtual-size"`
	ClusterSize           int64           `json:"cluster-size,omitempty"`
	Encrypted             bool            `json:"encrypted,omitempty"`
	Compressed            bool            `json:"compressed,omitempty"`
	BackingFilename       string          `json:"backing-filename,omitempty"`
	FullBackingFilename   string          `json:"full-backing-filename,omitempty"`
	BackingFilenameFormat string          `json:"backing-filename-format,omitempty"`
	Snapshots             []SnapshotInfo  `json:"snapshots,omitempty"`
	FormatSpecific        *FormatSpecific `json:"format-specific,omitempty"`
}

// SnapshotInfo is one internal snapshot (QAPI SnapshotInfo).
type SnapshotInfo struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	VMStateSize int64  `json:"vm-state-size"`
	DateSec     int64  `json:"date-sec"`
	DateNsec    int64  `json:"date-nsec"`
	VMClockSec  int64  `json:"vm-clock-sec"`
	VMClockNsec int64  `json:"vm-clock-nsec"`
	ICount      *int64 `json:"icount,omitempty"`
}

// FormatSpecific is the tagged union of per-format details; Data is the
// driver's own struct, printed in its field order.
type FormatSpecific struct {
	Type string `json:"type"`
	Data any    `json:"data"`
}

// CollectInfo gathers the information about one node of a chain (without
// its backing nodes; callers walk Chain for --backing-chain).
func CollectInfo(n *Node) (*Info, error) {
	info := &Info{
		Filename:    n.ShownName(),
		Format:      n.Format,
		VirtualSize: n.Size(),
	}
	host := n
	if f := n.File(); f != nil {
		host = f
	}
	_, informer := n.drv.(Informer)
	// a format without get_info in qemu (bochs, cloop) shows no dirty flag
	_, selfInfoLess := n.drv.(InfoLess)
	if _, infoLess := host.drv.(InfoLess); !selfInfoLess && (informer || !infoLess) {
		info.DirtyFlag = new(bool)
	}
	sizer := host.drv
	if _, ok := n.drv.(AllocatedSizer); ok {
		sizer = n.drv // the format counts files beyond its own (extents)
	}
	if a, ok := sizer.(AllocatedSizer); ok {
		if s := a.AllocatedSize(); s >= 0 {
			info.ActualSize = &s
		}
	}
	if b, ok := n.drv.(BackingReferrer); ok {
		name, format := b.BackingFile()
		if name != "" {
			info.BackingFilename = name
			info.FullBackingFilename = ResolveBacking(n.Filename, name)
			info.BackingFilenameFormat = format
		}
	}
	if in, ok := n.drv.(Informer); ok {
		if err := in.Info(info); err != nil {
			return nil, err
		}
	}
	return info, nil
}
