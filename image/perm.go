package image

import "strings"

// Perm is a set of permissions on a node, QEMU's BLK_PERM_* bits. The first
// four are shared with QEMU and become lock bytes on files (see lock/);
// PermGraphMod is checked inside the process only.
type Perm uint8

const (
	PermConsistentRead Perm = 1 << iota // reads see consistent data
	PermWrite                           // the data may change
	PermWriteUnchanged                  // writes that do not change the data
	PermResize                          // the size may change
	PermGraphMod                        // which node an edge points to may change

	// PermAll is every permission; sharing PermAll is the -U behaviour.
	PermAll = PermConsistentRead | PermWrite | PermWriteUnchanged | PermResize | PermGraphMod
	// PermLockable are the permissions mirrored in file locks.
	PermLockable = PermConsistentRead | PermWrite | PermWriteUnchanged | PermResize
)

// permNames are QEMU's names, which appear in its lock error messages
// (`Failed to get "write" lock`), so tools grepping for them keep working.
var permNames = [...]string{"consistent read", "write", "write unchanged", "resize", "change children"}

// Name of a single permission bit.
func (p Perm) Name() string {
	for i, n := range permNames {
		if p == 1<<i {
			return n
		}
	}
	return p.String()
}

// String lists the permissions, comma separated.
func (p Perm) String() string {
	var names []string
	for i, n := range permNames {
		if p&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// Bits returns the individual permissions of p, lowest first.
func (p Perm) Bits() []Perm {
	var bits []Perm
	for i := range permNames {
		if b := Perm(1 << i); p&b != 0 {
			bits = append(bits, b)
		}
	}
	return bits
}

// Claim is what a user of a node needs (Perm) and what it lets other users
// of the same node do at the same time (Shared).
type Claim struct {
	Perm   Perm
	Shared Perm
}

// Common claims of the commands. Users at the root share everything they
// can, as QEMU's do; formats with metadata then refuse writers and resizers
// of their files (DefaultFileClaim), which is what makes `info` of a qcow2
// image that a VM writes fail while `info` of a raw one works.
var (
	// ClaimInfo looks at an image without reading its guest data (info),
	// QEMU's BDRV_O_NO_IO: no permission at all, so qemu-img info of a raw
	// image takes no lock byte, and that of a qcow2 image only refuses
	// writers and resizers of its file (bytes 201 and 203).
	ClaimInfo = Claim{Perm: 0, Shared: PermAll}
	// ClaimRead reads (map, compare, a convert source).
	ClaimRead = Claim{Perm: PermConsistentRead, Shared: PermAll}
	// ClaimForceShare is -U: read, share everything down the whole graph.
	ClaimForceShare = Claim{Perm: PermConsistentRead, Shared: PermAll}
	// ClaimWrite reads, writes and resizes; shares reading only.
	ClaimWrite = Claim{Perm: PermConsistentRead | PermWrite | PermResize, Shared: PermConsistentRead | PermWriteUnchanged}
	// ClaimCreate writes and resizes a file being created; it lets others
	// do anything but resize it, as QEMU's create does.
	ClaimCreate = Claim{Perm: PermWrite | PermResize, Shared: PermAll &^ PermResize}
)
