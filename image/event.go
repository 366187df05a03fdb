package image

// Debug events: named points of a driver's work (qemu's BlkdebugEvent,
// raised with BLKDBG_EVENT). A driver raises them on the node it is about
// to write or read through (a format on its file child); the first node
// from there down the file children whose driver handles events (a
// blkdebug filter) acts on them, typically by failing the requests that
// follow. Without such a node an event costs a type check per level.

// Event is one of qemu 7.2's BlkdebugEvent names.
type Event string

const (
	EvL1Update                Event = "l1_update"
	EvL1GrowAllocTable        Event = "l1_grow_alloc_table"
	EvL1GrowWriteTable        Event = "l1_grow_write_table"
	EvL1GrowActivateTable     Event = "l1_grow_activate_table"
	EvL2Load                  Event = "l2_load"
	EvL2Update                Event = "l2_update"
	EvL2UpdateCompressed      Event = "l2_update_compressed"
	EvL2AllocCOWRead          Event = "l2_alloc_cow_read"
	EvL2AllocWrite            Event = "l2_alloc_write"
	EvReadAIO                 Event = "read_aio"
	EvReadBackingAIO          Event = "read_backing_aio"
	EvReadCompressed          Event = "read_compressed"
	EvWriteAIO                Event = "write_aio"
	EvWriteCompressed         Event = "write_compressed"
	EvVMStateLoad             Event = "vmstate_load"
	EvVMStateSave             Event = "vmstate_save"
	EvCOWRead                 Event = "cow_read"
	EvCOWWrite                Event = "cow_write"
	EvReftableLoad            Event = "reftable_load"
	EvReftableGrow            Event = "reftable_grow"
	EvReftableUpdate          Event = "reftable_update"
	EvRefblockLoad            Event = "refblock_load"
	EvRefblockUpdate          Event = "refblock_update"
	EvRefblockUpdatePart      Event = "refblock_update_part"
	EvRefblockAlloc           Event = "refblock_alloc"
	EvRefblockAllocHookup     Event = "refblock_alloc_hookup"
	EvRefblockAllocWrite      Event = "refblock_alloc_write"
	EvRefblockAllocWriteBlock Event = "refblock_alloc_write_blocks"
	EvRefblockAllocWriteTable Event = "refblock_alloc_write_table"
	EvRefblockAllocSwitch     Event = "refblock_alloc_switch_table"
	EvClusterAlloc            Event = "cluster_alloc"
	EvClusterAllocBytes       Event = "cluster_alloc_bytes"
	EvClusterFree             Event = "cluster_free"
	EvFlushToOS               Event = "flush_to_os"
	EvFlushToDisk             Event = "flush_to_disk"
	EvPwritevRMWHead          Event = "pwritev_rmw_head"
	EvPwritevRMWAfterHead     Event = "pwritev_rmw_after_head"
	EvPwritevRMWTail          Event = "pwritev_rmw_tail"
	EvPwritevRMWAfterTail     Event = "pwritev_rmw_after_tail"
	EvPwritev                 Event = "pwritev"
	EvPwritevZero             Event = "pwritev_zero"
	EvPwritevDone             Event = "pwritev_done"
	EvEmptyImagePrepare       Event = "empty_image_prepare"
	EvL1ShrinkWriteTable      Event = "l1_shrink_write_table"
	EvL1ShrinkFreeL2Clusters  Event = "l1_shrink_free_l2_clusters"
	EvCORWrite                Event = "cor_write"
	EvClusterAllocSpace       Event = "cluster_alloc_space"
	EvNone                    Event = "none"
)

// Events lists every event name, in qemu's order.
var Events = []Event{
	EvL1Update, EvL1GrowAllocTable, EvL1GrowWriteTable, EvL1GrowActivateTable,
	EvL2Load, EvL2Update, EvL2UpdateCompressed, EvL2AllocCOWRead, EvL2AllocWrite,
	EvReadAIO, EvReadBackingAIO, EvReadCompressed, EvWriteAIO, EvWriteCompressed,
	EvVMStateLoad, EvVMStateSave, EvCOWRead, EvCOWWrite,
	EvReftableLoad, EvReftableGrow, EvReftableUpdate,
	EvRefblockLoad, EvRefblockUpdate, EvRefblockUpdatePart, EvRefblockAlloc,
	EvRefblockAllocHookup, EvRefblockAllocWrite, EvRefblockAllocWriteBlock,
	EvRefblockAllocWriteTable, EvRefblockAllocSwitch,
	EvClusterAlloc, EvClusterAllocBytes, EvClusterFree, EvFlushToOS, EvFlushToDisk,
	EvPwritevRMWHead, EvPwritevRMWAfterHead, EvPwritevRMWTail, EvPwritevRMWAfterTail,
	EvPwritev, EvPwritevZero, EvPwritevDone, EvEmptyImagePrepare,
	EvL1ShrinkWriteTable, EvL1ShrinkFreeL2Clusters, EvCORWrite, EvClusterAllocSpace, EvNone,
}

// EventHandler is implemented by drivers that act on debug events.
type EventHandler interface {
	Event(ev Event)
}

// Event raises ev on n (qemu's bdrv_debug_event): the first node from n
// down its file children whose driver handles events gets it.
func (n *Node) Event(ev Event) {
	for c := n; c != nil; c = c.File() {
		if h, ok := c.drv.(EventHandler); ok {
			h.Event(ev)
			return
		}
	}
}

// Filter is implemented by protocol drivers that sit over another
// protocol node (blkdebug): opening one opens the node it names as its
// file child, which gets its users' claims unchanged.
type Filter interface {
	// ChildName is the filename of the node below.
	ChildName() string
	// SetChild hands the opened child over.
	SetChild(child *Node)
}

// FilterChildOptions is implemented by filters whose child may come as
// open options (blkdebug's image.driver=file,image.filename=P).
type FilterChildOptions interface {
	// ChildOptions are the child's options, flattened; nil when
	// ChildName names it.
	ChildOptions() map[string]string
}
