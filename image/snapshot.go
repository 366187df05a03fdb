package image

import "strings"

// Snapshotter is implemented by formats with internal snapshots that can
// create, delete and apply them (qcow2).
type Snapshotter interface {
	CreateSnapshot(name string) error
	// DeleteSnapshot removes the snapshot whose id or name is name.
	DeleteSnapshot(name string) error
	// ApplySnapshot makes the guest view that of the snapshot.
	ApplySnapshot(name string) error
}

// SnapshotLoader is implemented by formats that can show an internal
// snapshot instead of the current state of a read-only image
// (convert -l). id and name select the snapshot; either may be empty, and
// a bare name given to -l is tried as both.
type SnapshotLoader interface {
	LoadSnapshot(id, name string) error
}

// SnapshotSpec is a -l argument: "snapshot.id=ID[,snapshot.name=NAME]",
// or a bare name that matches a snapshot's id or name.
type SnapshotSpec struct {
	ID, Name string
	Either   string // the bare form
}

// ParseSnapshotSpec parses a -l argument as qemu-img does.
func ParseSnapshotSpec(s string) (SnapshotSpec, error) {
	if !strings.HasPrefix(s, "snapshot.") {
		return SnapshotSpec{Either: s}, nil
	}
	o, err := ParseOptions(s)
	if err != nil {
		return SnapshotSpec{}, err
	}
	var sp SnapshotSpec
	for _, k := range o.Keys() {
		v, _ := o.Get(k)
		switch k {
		case "snapshot.id":
			sp.ID = v
		case "snapshot.name":
			sp.Name = v
		default:
			return SnapshotSpec{}, Errorf(nil, "Invalid parameter '%s'", k)
		}
	}
	return sp, nil
}
