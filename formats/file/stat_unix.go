//go:build unix

package file

import (
	"os"

	"golang.org/x/sys/unix"
)

// statFile reads what open and Reopen need of an open file: its kind,
// size, identity and the space it takes.
func statFile(f *os.File, _ string) (fileStat, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fileStat{}, err
	}
	kind := kindOther
	switch uint32(st.Mode) & unix.S_IFMT {
	case unix.S_IFREG:
		kind = kindRegular
	case unix.S_IFBLK:
		kind = kindBlock
	case unix.S_IFCHR:
		kind = kindChar
	}
	return fileStat{
		kind:      kind,
		size:      st.Size,
		dev:       uint64(st.Dev),
		ino:       uint64(st.Ino),
		allocated: int64(st.Blocks) * 512,
	}, nil
}

// osPath is the name the system opens for path: the same.
func osPath(path string) string { return path }
