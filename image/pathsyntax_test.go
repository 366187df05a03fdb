package image

import "testing"

// TestWindowsNames checks the names qemu-img on Windows takes, by
// qemu's path_has_protocol, path_is_absolute, is_windows_drive and
// path_combine, on every platform.
func TestWindowsNames(t *testing.T) {
	win := pathSyntax{windows: true}
	for _, tc := range []struct {
		name                    string
		protocol, abs, isDevice bool
	}{
		{`C:\images\disk.qcow2`, false, true, false},
		{`C:/images/disk.qcow2`, false, true, false},
		{`c:disk.qcow2`, false, true, false},
		{`C:`, false, true, true},
		{`\\.\PhysicalDrive1`, false, true, true},
		{`//./PhysicalDrive1`, false, true, true},
		{`\\.\C:`, false, true, true},
		{`\\server\share\disk.vhdx`, false, true, false},
		{`\images\disk.qcow2`, false, true, false},
		{`images\disk.qcow2`, false, false, false},
		{`disk.qcow2`, false, false, false},
		{`nbd://host/export`, true, false, false},
		{`file:C:\disk.qcow2`, true, false, false},
		{`dir\a:b`, false, false, false},
		{`ab:c`, true, false, false},
	} {
		if got := win.hasProtocol(tc.name); got != tc.protocol {
			t.Errorf("hasProtocol(%q) = %v on Windows", tc.name, got)
		}
		if got := win.isAbsolute(tc.name); got != tc.abs {
			t.Errorf("isAbsolute(%q) = %v on Windows", tc.name, got)
		}
		if got := win.isDevice(tc.name); got != tc.isDevice {
			t.Errorf("isDevice(%q) = %v on Windows", tc.name, got)
		}
	}
}

func TestWindowsBackingNames(t *testing.T) {
	win := pathSyntax{windows: true}
	for _, tc := range []struct{ overlay, name, want string }{
		{`C:\images\top.qcow2`, `base.qcow2`, `C:\images\base.qcow2`},
		{`C:/images/top.qcow2`, `base.qcow2`, `C:/images/base.qcow2`},
		{`C:\images/sub\top.qcow2`, `..\base.qcow2`, `C:\images/sub\..\base.qcow2`},
		{`\\server\share\top.vhdx`, `base.vhdx`, `\\server\share\base.vhdx`},
		{`top.qcow2`, `base.qcow2`, `base.qcow2`},
		{`C:top.qcow2`, `base.qcow2`, `base.qcow2`},
		{`images\top.qcow2`, `D:\base.qcow2`, `D:\base.qcow2`},
		{`images\top.qcow2`, `\base.qcow2`, `\base.qcow2`},
		{`file:C:\images\top.qcow2`, `base.qcow2`, `C:\images\base.qcow2`},
		{`nbd://host/export`, `base`, `base`},
	} {
		if got := win.resolve(tc.overlay, tc.name); got != tc.want {
			t.Errorf("resolve(%q, %q) = %q on Windows, want %q", tc.overlay, tc.name, got, tc.want)
		}
	}
	// elsewhere a backslash and a drive letter are parts of a name
	posix := pathSyntax{}
	if got := posix.resolve(`d/top.qcow2`, `C:\base.qcow2`); got != `C:\base.qcow2` {
		t.Errorf("C: is a protocol prefix off Windows: %q", got)
	}
	if got := posix.resolve(`d\e/top.qcow2`, `base`); got != `d\e/base` {
		t.Errorf("backslash is no separator off Windows: %q", got)
	}
}
