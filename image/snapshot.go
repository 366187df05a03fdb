package image

import "strings"

// Snapshotter is implemented by formats with internal snapshots that can
// create, delete and apply them (qcow2).
type Snapshotter interface {
	CreateSnapshot(name string) error
	// DeleteSnapshot removes the first snapshot named name (qemu-img's
	// snapshot -d matches names only).
	DeleteSnapshot(name string) error
	// ApplySnapshot makes the guest view that of the snapshot whose id,
	// or else name, is idOrName.
	ApplySnapshot(idOrName string) error
}

// SnapshotLoader is implemented by formats that can show an internal
// snapshot instead of the current state of a read-only image
// (convert -l, measure -l); the image keeps its current size.
type SnapshotLoader interface {
	LoadSnapshot(sp SnapshotSpec) error
}

// SnapshotSpec selects an internal snapshot the way qemu's block layer
// does: by id and/or name ("snapshot.id=ID,snapshot.name=NAME", where a
// key given with an empty value still has to match), or by a bare word
// tried as an id first and then as a name.
type SnapshotSpec struct {
	ID, Name       string
	HasID, HasName bool
	Bare           bool // ID and Name hold the same word, tried in turn
}

// SnapshotByIDOrName is the bare selector: qemu's
// find_snapshot_by_id_or_name (snapshot -a, convert -l NAME).
func SnapshotByIDOrName(s string) SnapshotSpec {
	return SnapshotSpec{ID: s, Name: s, HasID: true, HasName: true, Bare: true}
}

// SnapshotByName selects the first snapshot with that name
// (qemu's bdrv_snapshot_find, used by snapshot -d).
func SnapshotByName(s string) SnapshotSpec {
	return SnapshotSpec{Name: s, HasName: true}
}

// SnapshotKey is what a selector looks at in a snapshot table entry.
type SnapshotKey struct{ ID, Name string }

// Index returns the index in table of the snapshot sp selects, or -1.
func (sp SnapshotSpec) Index(table []SnapshotKey) int {
	if sp.Bare {
		if i := (SnapshotSpec{ID: sp.ID, HasID: true}).Index(table); i >= 0 {
			return i
		}
		return SnapshotSpec{Name: sp.Name, HasName: true}.Index(table)
	}
	if !sp.HasID && !sp.HasName {
		return -1
	}
	for i, k := range table {
		if (!sp.HasID || k.ID == sp.ID) && (!sp.HasName || k.Name == sp.Name) {
			return i
		}
	}
	return -1
}

// ParseSnapshotSpec parses a -l argument as qemu-img does.
func ParseSnapshotSpec(s string) (SnapshotSpec, error) {
	if !strings.HasPrefix(s, "snapshot.") {
		return SnapshotByIDOrName(s), nil
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
			sp.ID, sp.HasID = v, true
		case "snapshot.name":
			sp.Name, sp.HasName = v, true
		default:
			return SnapshotSpec{}, Errorf(nil, "Invalid parameter '%s'", k)
		}
	}
	return sp, nil
}
