package qcow2

import "qimg/image"

// formatInfo is QAPI's ImageInfoSpecificQCow2, fields in the schema's
// order (which decides the printed key order).
type formatInfo struct {
	Compat          string        `json:"compat"`
	DataFile        string        `json:"data-file,omitempty"`
	DataFileRaw     *bool         `json:"data-file-raw,omitempty"`
	ExtendedL2      *bool         `json:"extended-l2,omitempty"`
	LazyRefcounts   *bool         `json:"lazy-refcounts,omitempty"`
	Corrupt         *bool         `json:"corrupt,omitempty"`
	RefcountBits    int           `json:"refcount-bits"`
	Encrypt         any           `json:"encrypt,omitempty"`
	Bitmaps         *[]bitmapInfo `json:"bitmaps,omitempty"`
	CompressionType string        `json:"compression-type"`
}

func boolp(b bool) *bool { return &b }

// Info fills the qcow2 part of info.
func (q *Image) Info(info *image.Info) error {
	q.meta.RLock()
	h := q.h
	corrupt := q.corrupt || h.incompatible&incompatCorrupt != 0
	q.meta.RUnlock()
	info.ClusterSize = q.clusterSize
	dirty := h.incompatible&incompatDirty != 0
	info.DirtyFlag = &dirty
	info.Encrypted = h.cryptMethod != cryptNone
	fi := &formatInfo{RefcountBits: h.refcountBits(), CompressionType: "zlib"}
	if q.encrypt != nil {
		fi.Encrypt = q.encrypt
	}
	if h.compressionType == compressionZstd {
		fi.CompressionType = "zstd"
	}
	if h.version == 2 {
		fi.Compat = "0.10"
	} else {
		fi.Compat = "1.1"
		fi.LazyRefcounts = boolp(h.compatible&compatLazyRefcounts != 0)
		fi.Corrupt = boolp(corrupt)
		fi.ExtendedL2 = boolp(q.extendedL2)
		if h.incompatible&incompatDataFile != 0 {
			fi.DataFile = h.dataFile
			fi.DataFileRaw = boolp(h.autoclear&autoclearDataFileRaw != 0)
		}
		bms, err := q.loadBitmapDir()
		if err != nil {
			return err
		}
		if len(bms) > 0 {
			l := bitmapInfos(bms)
			fi.Bitmaps = &l
		}
	}
	snaps, err := q.readSnapshots()
	if err != nil {
		return err
	}
	if len(snaps) > 0 {
		info.Snapshots = snapshotInfos(snaps)
	}
	info.FormatSpecific = &image.FormatSpecific{Type: "qcow2", Data: fi}
	return nil
}
