package image

import (
	"os"
	"runtime"
	"strings"
)

// pathSyntax is how the host spells file names, as qemu-img reads them
// there: on Windows a drive letter ("C:\images\a.qcow2", "C:/a", "C:") is
// not a protocol prefix, '\' separates folders as '/' does, and "\\.\X"
// names a device (\\.\PhysicalDrive1, \\.\C:). The rules are pure
// functions of the name, so every platform's tests check Windows's too.
type pathSyntax struct{ windows bool }

// hostPaths is the syntax of the platform qimg runs on.
var hostPaths = pathSyntax{windows: runtime.GOOS == "windows"}

// isDrivePrefix reports whether a name starts with a drive letter and a
// colon (qemu's is_windows_drive_prefix).
func isDrivePrefix(name string) bool {
	return len(name) >= 2 && name[1] == ':' && (name[0] >= 'a' && name[0] <= 'z' || name[0] >= 'A' && name[0] <= 'Z')
}

// isWindowsDrive reports whether a name is a whole drive or a device:
// "C:", "\\.\X" or "//./X" (qemu's is_windows_drive), which qemu on
// Windows opens with its host_device driver.
func isWindowsDrive(name string) bool {
	return len(name) == 2 && isDrivePrefix(name) ||
		strings.HasPrefix(name, `\\.\`) || strings.HasPrefix(name, "//./")
}

// hasProtocol reports whether a name starts with "proto:", a colon before
// any separator (qemu's path_has_protocol).
func (s pathSyntax) hasProtocol(name string) bool {
	seps := ":/"
	if s.windows {
		if isWindowsDrive(name) || isDrivePrefix(name) {
			return false
		}
		seps = `:/\`
	}
	i := strings.IndexAny(name, seps)
	return i >= 0 && name[i] == ':'
}

// isAbsolute is qemu's path_is_absolute: on Windows a name with a drive
// letter, a device, or one that starts with a separator (UNC names too).
func (s pathSyntax) isAbsolute(name string) bool {
	if s.windows {
		return isWindowsDrive(name) || isDrivePrefix(name) || strings.HasPrefix(name, "/") || strings.HasPrefix(name, `\`)
	}
	return strings.HasPrefix(name, "/")
}

// dirLen is the length of the folder part of a name, up to and with its
// last separator.
func (s pathSyntax) dirLen(name string) int {
	i := strings.LastIndexByte(name, '/')
	if s.windows {
		i = max(i, strings.LastIndexByte(name, '\\'))
	}
	return i + 1
}

// isDevice reports whether a name is a device, which qemu opens with its
// host_device driver whatever the name looks like: on Windows a drive or
// \\.\ name, elsewhere a block or character device.
func (s pathSyntax) isDevice(name string) bool {
	if s.windows {
		return isWindowsDrive(name)
	}
	st, err := os.Stat(name)
	return err == nil && st.Mode()&os.ModeDevice != 0
}

// IsDevice reports whether a name is a device (a disk, not a file): data
// already there does not read as zeroes after a create.
func IsDevice(name string) bool { return hostPaths.isDevice(name) }
