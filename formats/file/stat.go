package file

// fileKind is what an open name turned out to be, the part of its type
// the drivers' rules look at.
type fileKind int

const (
	kindOther fileKind = iota // a directory, FIFO, socket…
	kindRegular
	kindBlock
	kindChar
)

// fileStat is what statFile (stat_unix.go, stat_windows.go) reads of an
// open file.
type fileStat struct {
	kind      fileKind
	size      int64  // of a regular file; devices are sized by deviceSize
	dev, ino  uint64 // identity: one file opened twice is one node
	allocated int64  // bytes the file takes on disk
}
