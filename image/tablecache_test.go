package image

import (
	"encoding/binary"
	"testing"
)

// TestTableCache: tables are read once in the byte order given, changed
// entries show, dropped tables are read again, and the cache stays within
// its limit.
func TestTableCache(t *testing.T) {
	data := make([]byte, 4096)
	for i := 0; i < len(data)/8; i++ {
		binary.LittleEndian.PutUint64(data[i*8:], uint64(i))
	}
	memPut("tables", data)
	n := mustOpen(t, "tables", "mem", false, ClaimRead, "test")
	defer n.Close()
	c := NewTableCache(binary.LittleEndian, 2, EvNone)
	get := func(off uint64, n0 int64) []uint64 {
		t.Helper()
		tab, err := c.Get(n, off, n0)
		if err != nil {
			t.Fatal(err)
		}
		return tab
	}
	if tab := get(64, 4); tab[0] != 8 || tab[3] != 11 {
		t.Fatalf("table at 64: %v", tab)
	}
	memGet("tables").data[64] = 99 // the file changes behind the cache
	if tab := get(64, 4); tab[0] != 8 {
		t.Fatalf("cached table read again: %v", tab)
	}
	c.SetEntry(64, 1, 42)
	if tab := get(64, 4); tab[1] != 42 {
		t.Fatalf("SetEntry not seen: %v", tab)
	}
	c.Drop(0, 128)
	if tab := get(64, 4); tab[0] != 99 || tab[1] != 9 {
		t.Fatalf("dropped table not read again: %v", tab)
	}
	get(128, 2)
	get(256, 2) // over the limit: everything is forgotten first
	if len(c.tables) > 2 {
		t.Fatalf("%d tables cached, limit 2", len(c.tables))
	}
	if tab := get(4090, 2); tab[1] != 0 {
		t.Fatalf("past the end: %v", tab)
	}
	if tab := get(1<<63, 1); tab[0] != 0 {
		t.Fatalf("offset past int64: %v", tab)
	}
}
