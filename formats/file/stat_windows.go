//go:build windows

package file

import (
	"hash/fnv"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/windows"

	"qimg/image"
)

// fileStandardInfo is FILE_STANDARD_INFO, GetFileInformationByHandleEx's
// answer for FileStandardInfo.
type fileStandardInfo struct {
	AllocationSize int64
	EndOfFile      int64
	NumberOfLinks  uint32
	DeletePending  byte
	Directory      byte
}

// statFile reads what open and Reopen need of an open file. A device name
// (\\.\PhysicalDrive1, \\.\C:, C:) is a disk, as qemu's file-win32 takes it;
// Windows does not tell disks from files by their type.
func statFile(f *os.File, path string) (fileStat, error) {
	if image.IsDevice(path) {
		return fileStat{kind: kindBlock, ino: nameIdentity(path)}, nil
	}
	h := windows.Handle(f.Fd())
	var info windows.ByHandleFileInformation
	if err := windows.GetFileInformationByHandle(h, &info); err != nil {
		return fileStat{}, err
	}
	st := fileStat{
		kind: kindRegular,
		size: int64(info.FileSizeHigh)<<32 | int64(info.FileSizeLow),
		dev:  uint64(info.VolumeSerialNumber),
		ino:  uint64(info.FileIndexHigh)<<32 | uint64(info.FileIndexLow),
	}
	switch t, _ := windows.GetFileType(h); {
	case t == windows.FILE_TYPE_CHAR:
		st.kind = kindChar
	case info.FileAttributes&windows.FILE_ATTRIBUTE_DIRECTORY != 0 || t != windows.FILE_TYPE_DISK:
		st.kind = kindOther
	}
	var std fileStandardInfo
	if windows.GetFileInformationByHandleEx(h, windows.FileStandardInfo, (*byte)(unsafe.Pointer(&std)), uint32(unsafe.Sizeof(std))) == nil {
		st.allocated = std.AllocationSize
	}
	return st, nil
}

// nameIdentity stands in for the file index of a device, which Windows
// does not give: its name, in one case.
func nameIdentity(path string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(strings.ToUpper(strings.ReplaceAll(path, "/", `\`))))
	return h.Sum64()
}

// osPath is the name the system opens for path: a bare drive ("C:") is
// the volume \\.\C:, as qemu's file-win32 opens it.
func osPath(path string) string {
	if len(path) == 2 && path[1] == ':' {
		return `\\.\` + path
	}
	return path
}
