package image

// CacheMode is qemu-img's -t/-T cache mode: whether the host page cache is
// bypassed (O_DIRECT), whether every write is made durable (O_DSYNC), and
// whether flushes are ignored.
type CacheMode struct {
	Name      string
	Direct    bool // O_DIRECT: aligned buffers, no host page cache
	WriteSync bool // O_DSYNC: each write is durable when it returns
	NoFlush   bool // flush requests are ignored (unsafe)
}

// Cache modes by name, as qemu-img spells them.
var cacheModes = map[string]CacheMode{
	"writeback":    {Name: "writeback"},
	"none":         {Name: "none", Direct: true},
	"off":          {Name: "none", Direct: true},
	"writethrough": {Name: "writethrough", WriteSync: true},
	"directsync":   {Name: "directsync", Direct: true, WriteSync: true},
	"unsafe":       {Name: "unsafe", NoFlush: true},
}

// CacheWriteback is the default cache mode of most commands.
var CacheWriteback = cacheModes["writeback"]

// ParseCacheMode parses a -t/-T value.
func ParseCacheMode(s string) (CacheMode, error) {
	m, ok := cacheModes[s]
	if !ok {
		return CacheMode{}, Errorf(nil, "Invalid cache option: %s", s)
	}
	return m, nil
}
