// Package null is qemu's null-co and null-aio protocol drivers: a device
// of a given size whose writes go nowhere and whose reads return zeroes
// (read-zeroes) or leave the buffer as it is. Block-layer benchmarks use
// it as the source and the sink that cost nothing, so that what they
// measure is the layers above.
package null

import (
	"fmt"
	"strconv"
	"time"

	"qimg/image"
)

// Both names are one driver: qemu's null-aio differs only in the
// coroutine plumbing beneath, which qimg does not have.
var names = []string{"null-co", "null-aio"}

func init() {
	for _, name := range names {
		image.Register(&image.Format{Name: name, Protocol: true, OpenProtocol: openProtocol(name)})
	}
}

// defaultSize is qemu's NULL_OPT_SIZE default, 1 GiB.
const defaultSize = 1 << 30

// Options are the driver's open options (qemu's runtime_opts of
// block/null.c).
type Options struct {
	Size       int64         // "size", bytes
	ReadZeroes bool          // "read-zeroes": reads fill the buffer with zeroes
	Latency    time.Duration // "latency-ns": every request waits this long
}

// ParseOptions reads the options from an option string's keys (size,
// read-zeroes, latency-ns) in qemu's words; unknown keys are refused.
func ParseOptions(name string, opts map[string]string) (Options, error) {
	o := Options{Size: defaultSize}
	for k, v := range opts {
		var err error
		switch k {
		case "size":
			o.Size, err = image.ParseSize(v)
			if err != nil || o.Size < 0 {
				err = fmt.Errorf("Parameter 'size' expects a non-negative number below 2^64")
			}
		case "read-zeroes":
			o.ReadZeroes, err = parseBool(k, v)
		case "latency-ns":
			var ns uint64
			ns, err = strconv.ParseUint(v, 0, 64)
			if err != nil || ns > uint64(1<<63-1) {
				err = fmt.Errorf("Parameter 'latency-ns' expects a number")
			}
			o.Latency = time.Duration(ns)
		default:
			err = fmt.Errorf("Block protocol '%s' doesn't support the option '%s'", name, k)
		}
		if err != nil {
			return Options{}, err
		}
	}
	return o, nil
}

func parseBool(key, v string) (bool, error) {
	switch v {
	case "on", "true", "yes", "y":
		return true, nil
	case "off", "false", "no", "n":
		return false, nil
	}
	return false, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", key)
}

// openProtocol opens a plain filename, which qemu allows to be nothing but
// "null-co://" (or "null-aio://"): the options take their defaults.
func openProtocol(name string) func(string, image.ProtocolOptions) (image.Driver, error) {
	return func(filename string, _ image.ProtocolOptions) (image.Driver, error) {
		if want := name + "://"; filename != want {
			return nil, fmt.Errorf("The only allowed filename for this driver is '%s'", want)
		}
		return Open(Options{Size: defaultSize}), nil
	}
}

// Device is an open null device.
type Device struct {
	size       int64
	readZeroes bool
	latency    time.Duration
}

// Open opens a null device with the given options. Its size is whole
// sectors, as qemu's block layer rounds it.
func Open(o Options) *Device {
	const sector = 512
	size := (o.Size + sector - 1) / sector * sector
	return &Device{size: size, readZeroes: o.ReadZeroes, latency: o.Latency}
}

func (d *Device) wait() {
	if d.latency > 0 {
		time.Sleep(d.latency)
	}
}

// ReadAt returns zeroes with read-zeroes; without, the buffer is left as
// it is, as qemu leaves it (the point is to cost nothing).
func (d *Device) ReadAt(p []byte, off int64) (int, error) {
	d.wait()
	if d.readZeroes {
		clear(p)
	}
	return len(p), nil
}

// WriteAt drops the data.
func (d *Device) WriteAt(p []byte, off int64) (int, error) {
	d.wait()
	return len(p), nil
}

// WriteZeroes drops the request.
func (d *Device) WriteZeroes(off, length int64, unmap bool) error {
	d.wait()
	return nil
}

// Discard drops the request.
func (d *Device) Discard(off, length int64) error {
	d.wait()
	return nil
}

// Flush has nothing to make durable.
func (d *Device) Flush() error {
	d.wait()
	return nil
}

func (d *Device) Size() int64 { return d.size }

// BlockStatus is qemu's null_co_block_status: every byte is at its own
// offset, known to read as zero only with read-zeroes.
func (d *Device) BlockStatus(off, length int64) (image.Extent, error) {
	e := image.Extent{Offset: off, Length: min(length, d.size-off), HostOffset: -1}
	if d.readZeroes {
		e.Allocated, e.Zero, e.HostOffset = true, true, off
	}
	return e, nil
}

func (d *Device) Close() error { return nil }

// AllocatedSize is 0: the device occupies nothing ("disk size: 0 B").
func (d *Device) AllocatedSize() int64 { return 0 }

// InfoLess: qemu's null driver has no get_info, so no dirty flag shows.
func (d *Device) InfoLess() {}

// UnsetContent: without read-zeroes a read returns no defined bytes.
func (d *Device) UnsetContent() {}

// Reopen has nothing to change between read-only and read/write.
func (d *Device) Reopen(writable bool) error { return nil }
