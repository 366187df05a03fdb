package image

// Snapshotter is implemented by formats with internal snapshots that can
// create, delete and apply them (qcow2).
type Snapshotter interface {
	CreateSnapshot(name string) error
	// DeleteSnapshot removes the snapshot whose id or name is name.
	DeleteSnapshot(name string) error
	// ApplySnapshot makes the guest view that of the snapshot.
	ApplySnapshot(name string) error
}
