package nbd

import "testing"

// TestIdentityNamesTheContext: an export opened for another block status
// context is another node, not the first open found again.
func TestIdentityNamesTheContext(t *testing.T) {
	a := Address{Network: "unix", Addr: "/s", Export: "exp"}
	plain := &Driver{conn: &Conn{addr: a}}
	a.metaContext = "qemu:dirty-bitmap:b0"
	bitmap := &Driver{conn: &Conn{addr: a}}
	if plain.Identity() == bitmap.Identity() {
		t.Fatalf("one identity %q for both contexts", plain.Identity())
	}
}
