package qemutest

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// procLocksID is how /proc/locks names a file: its device, major and
// minor in hex, and its inode.
func procLocksID(path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino), nil
}
