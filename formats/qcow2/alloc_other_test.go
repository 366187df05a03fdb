//go:build !unix

package qcow2

import "os"

// allocatedBytes is the apparent size where st_blocks is not known.
func allocatedBytes(st os.FileInfo) int64 { return st.Size() }
