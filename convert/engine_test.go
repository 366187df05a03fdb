package convert

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"qimg/checksum"
	_ "qimg/formats/file"
	_ "qimg/formats/raw"
	"qimg/image"
)

// faulty is a raw-like test format whose reads fail in one range and may
// stall, to test error propagation and salvage.
type faulty struct {
	file     *image.Node
	badStart int64
	badEnd   int64
	reads    *atomic.Int64
	failed   chan struct{}
	once     *sync.Once
}

var faultyRange struct {
	sync.Mutex
	start, end int64
	reads      atomic.Int64
	// failed is closed by the first failed read: reads past the bad
	// range wait for it, so that the failure comes first however the
	// workers are scheduled
	failed chan struct{}
	once   *sync.Once
}

func init() {
	image.Register(&image.Format{
		Name:      "convtest-faulty",
		FileClaim: image.PassThroughClaim,
		Open: func(o *image.OpenContext) (image.Driver, error) {
			faultyRange.Lock()
			defer faultyRange.Unlock()
			return &faulty{file: o.File, badStart: faultyRange.start, badEnd: faultyRange.end, reads: &faultyRange.reads,
				failed: faultyRange.failed, once: faultyRange.once}, nil
		},
	})
}

func (f *faulty) Size() int64  { return f.file.Size() }
func (f *faulty) Close() error { return nil }
func (f *faulty) BlockStatus(off, n int64) (image.Extent, error) {
	return image.Extent{Offset: off, Length: n, Allocated: true, Data: true, HostOffset: -1}, nil
}
func (f *faulty) ReadAt(p []byte, off int64) (int, error) {
	if f.badStart >= 0 && off >= f.badEnd && f.failed != nil {
		<-f.failed
	}
	f.reads.Add(1)
	if off < f.badEnd && off+int64(len(p)) > f.badStart {
		f.once.Do(func() { close(f.failed) })
		return 0, syscall.EIO
	}
	return f.file.ReadAt(p, off)
}

// sparseSource writes a raw file of size bytes: random data, runs of
// written zeroes and holes, with unaligned edges.
func sparseSource(t *testing.T, path string, size int64, seed int64) []byte {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	want := make([]byte, size)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off := int64(0); off < size; {
		n := min(size-off, int64(rng.Intn(300<<10)+1))
		switch rng.Intn(4) {
		case 0: // random data
			rng.Read(want[off : off+n])
			if _, err := f.WriteAt(want[off:off+n], off); err != nil {
				t.Fatal(err)
			}
		case 1: // zeroes written as data
			if _, err := f.WriteAt(make([]byte, n), off); err != nil {
				t.Fatal(err)
			}
		case 2: // a little data in a zero block
			want[off] = 0xaa
			if _, err := f.WriteAt(want[off:off+1], off); err != nil {
				t.Fatal(err)
			}
		default: // hole
		}
		off += n
	}
	return want
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundTripRaw(t *testing.T) {
	dir := t.TempDir()
	if d := os.Getenv("KEEP"); d != "" {
		dir = d
	}
	src := filepath.Join(dir, "src.raw")
	want := sparseSource(t, src, 6<<20+4096+512, 1)
	type cfg struct {
		workers int
		w       bool
		sparse  int64
		offload bool
	}
	var cfgs []cfg
	for _, workers := range []int{1, 3, 16} {
		for _, w := range []bool{false, true} {
			for _, sparse := range []int64{-1, 0, 512, 64 << 10} {
				cfgs = append(cfgs, cfg{workers, w, sparse, false})
			}
			cfgs = append(cfgs, cfg{workers, w, -1, true})
		}
	}
	for i, c := range cfgs {
		name := fmt.Sprintf("m%d-W%v-S%d-C%v", c.workers, c.w, c.sparse, c.offload)
		t.Run(name, func(t *testing.T) {
			dst := filepath.Join(dir, fmt.Sprintf("dst%d.raw", i))
			var calls int
			var last int64
			r := &Request{Sources: []string{src}, Target: dst, SourceFormat: "raw",
				Options: Options{Workers: c.workers, OutOfOrder: c.w, SparseSize: c.sparse, CopyOffload: c.offload,
					ChunkSize: 256 << 10,
					Progress: func(done, total int64) {
						calls++
						if done < last || done > total {
							t.Errorf("progress %d of %d after %d", done, total, last)
						}
						last = done
					}}}
			if err := r.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := readFile(t, dst)
			if !bytes.Equal(got, want) {
				t.Fatalf("content differs")
			}
			if calls == 0 {
				t.Errorf("no progress reported")
			}
			// a new file gets its first block allocated, as qemu-img's do
			if c.sparse != 0 && allocated(t, dst) > allocated(t, src)+4096 {
				t.Errorf("target allocates %d bytes, source %d", allocated(t, dst), allocated(t, src))
			}
			if c.sparse == 0 && allocated(t, dst) < int64(len(want)) {
				t.Errorf("-S 0: target allocates %d bytes of %d", allocated(t, dst), len(want))
			}
			if os.Getenv("KEEP") == "" {
				os.Remove(dst)
			}
		})
	}
}

func TestSeveralSources(t *testing.T) {
	dir := t.TempDir()
	var names []string
	var want []byte
	for i, size := range []int64{1<<20 + 512, 4096, 3<<20 - 512, 0, 777 * 512} {
		name := filepath.Join(dir, fmt.Sprintf("s%d.raw", i))
		want = append(want, sparseSource(t, name, size, int64(i+10))...)
		names = append(names, name)
	}
	for _, w := range []bool{false, true} {
		dst := filepath.Join(dir, fmt.Sprintf("dst-%v.raw", w))
		r := &Request{Sources: names, Target: dst, SourceFormat: "raw", Options: Options{OutOfOrder: w, ChunkSize: 64 << 10}}
		if err := r.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, dst); !bytes.Equal(got, want) {
			t.Fatalf("-W %v: concatenation differs (%d bytes, want %d)", w, len(got), len(want))
		}
	}
}

func TestNoCreateOverData(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	want := sparseSource(t, src, 3<<20, 7)
	dst := filepath.Join(dir, "dst.raw")
	old := bytes.Repeat([]byte{0xff}, 4<<20)
	if err := os.WriteFile(dst, old, 0o644); err != nil {
		t.Fatal(err)
	}
	r := &Request{Sources: []string{src}, Target: dst, SourceFormat: "raw", NoCreate: true}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := readFile(t, dst)
	if !bytes.Equal(got[:len(want)], want) {
		t.Fatal("-n: converted part differs")
	}
	if !bytes.Equal(got[len(want):], old[len(want):]) {
		t.Fatal("-n: bytes beyond the source changed")
	}
	// --target-is-zero trusts the target: zero runs are not written
	if err := os.WriteFile(dst, old, 0o644); err != nil {
		t.Fatal(err)
	}
	r = &Request{Sources: []string{src}, Target: dst, SourceFormat: "raw", NoCreate: true, TargetIsZero: true}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	// a target smaller than the source is refused
	small := filepath.Join(dir, "small.raw")
	if err := os.WriteFile(small, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	r = &Request{Sources: []string{src}, Target: small, SourceFormat: "raw", NoCreate: true}
	if err := r.Run(context.Background()); err == nil || err.Error() != "output file is smaller than input file" {
		t.Fatalf("small target: %v", err)
	}
}

func setFaulty(start, end int64) {
	faultyRange.Lock()
	faultyRange.start, faultyRange.end = start, end
	faultyRange.failed, faultyRange.once = make(chan struct{}), &sync.Once{}
	faultyRange.Unlock()
	faultyRange.reads.Store(0)
}

func TestReadErrorStopsEverything(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	data := bytes.Repeat([]byte{1}, 64<<20)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	before := readFile(t, src)
	for _, w := range []bool{false, true} {
		setFaulty(2<<20, 2<<20+4096)
		dst := filepath.Join(dir, fmt.Sprintf("dst-%v.raw", w))
		r := &Request{Sources: []string{src}, Target: dst, SourceFormat: "convtest-faulty",
			Options: Options{Workers: 4, OutOfOrder: w, ChunkSize: 1 << 20}}
		err := r.Run(context.Background())
		if err == nil || !strings.HasPrefix(err.Error(), "error while reading at byte 2097152: ") || !errors.Is(err, syscall.EIO) {
			t.Fatalf("-W %v: got %v", w, err)
		}
		// the first error cancels the rest: far fewer than 64 reads
		if n := faultyRange.reads.Load(); n > 20 {
			t.Errorf("-W %v: %d reads after the error", w, n)
		}
	}
	if !bytes.Equal(readFile(t, src), before) {
		t.Fatal("source changed")
	}
}

func TestSalvage(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	data := bytes.Repeat([]byte{1}, 4<<20)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	setFaulty(1<<20+512, 1<<20+1536)
	dst := filepath.Join(dir, "dst.raw")
	var warnings []string
	r := &Request{Sources: []string{src}, Target: dst, SourceFormat: "convtest-faulty",
		Options: Options{Salvage: true, Warn: func(m string) { warnings = append(warnings, m) }}}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(data)
	clear(want[1<<20+512 : 1<<20+1536])
	if !bytes.Equal(readFile(t, dst), want) {
		t.Fatal("salvaged content differs")
	}
	if len(warnings) != 1 || !strings.HasPrefix(warnings[0], "error while reading offset 1049088: ") {
		t.Fatalf("warnings: %q", warnings)
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Workers: -1}, "Invalid number of coroutines. Allowed number of coroutines is between 1 and 16"},
		{Options{Workers: 17}, "Invalid number of coroutines. Allowed number of coroutines is between 1 and 16"},
		{Options{SparseSize: 100}, "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output)."},
		{Options{SparseSize: 32 << 20}, "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16777216. Select 0 to disable sparse detection (fully allocates output)."},
		{Options{CopyOffload: true, Compress: true}, "Cannot enable copy offloading when -c is used"},
		{Options{CopyOffload: true, SparseSizeGiven: true, SparseSize: 4096}, "Cannot enable copy offloading when -S is used"},
		{Options{CopyOffload: true, Salvage: true, SparseSize: -1}, "Cannot use copy offloading in salvaging mode"},
	} {
		err := c.o.Validate()
		if err == nil || err.Error() != c.want {
			t.Errorf("%+v: got %v, want %q", c.o, err, c.want)
		}
	}
	o := Options{SparseSize: -1}
	if err := o.Validate(); err != nil || o.Workers != 8 || o.SparseSize != 4096 || o.ChunkSize != DefaultChunk {
		t.Fatalf("defaults: %+v %v", o, err)
	}
}

func TestIsZero(t *testing.T) {
	b := make([]byte, 100000)
	if !image.IsZero(b) || !image.IsZero(nil) {
		t.Fatal("zeroes not seen")
	}
	for _, i := range []int{0, 1, 16383, 16384, 99999} {
		b[i] = 1
		if image.IsZero(b) {
			t.Fatalf("byte %d missed", i)
		}
		b[i] = 0
	}
}

func TestMarks(t *testing.T) {
	// an extent of 5 MiB + 1 read in pieces: steps of 2 MiB from its start
	ext := piece{kind: kData, extOff: 1000, extEnd: 1000 + 5<<20 + 1}
	var marks []mark
	for off := int64(1000); off < ext.extEnd; {
		p := ext
		p.off = off
		p.n = min(1<<20-(off%(1<<20)), ext.extEnd-off)
		marks = appendMarks(marks, p)
		off += p.n
	}
	want := []int64{2 << 20, 2 << 20, 1<<20 + 1}
	if len(marks) != len(want) {
		t.Fatalf("marks %v", marks)
	}
	for i, m := range marks {
		if m.add != want[i] {
			t.Fatalf("marks %v", marks)
		}
	}
}

func TestExtendRuns(t *testing.T) {
	const u = 100
	for _, c := range []struct {
		in, want []run
	}{
		// data inside one unit takes the whole unit
		{[]run{{0, 130, true}, {130, 150, false}, {150, 400, true}},
			[]run{{0, 100, true}, {100, 200, false}, {200, 400, true}}},
		// two data runs in one unit merge
		{[]run{{0, 10, false}, {10, 50, true}, {50, 60, false}, {60, 300, true}},
			[]run{{0, 100, false}, {100, 300, true}}},
		// the span's edges bound the extension
		{[]run{{50, 60, false}, {60, 70, true}},
			[]run{{50, 70, false}}},
		// a zero run swallowed whole
		{[]run{{0, 90, false}, {90, 95, true}, {95, 120, false}, {120, 400, true}},
			[]run{{0, 200, false}, {200, 400, true}}},
	} {
		lo, hi := c.in[0].off, c.in[len(c.in)-1].end
		got := extendRuns(c.in, u, lo, hi)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("extendRuns(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// packed is a raw-like test format with compressed clusters: a cluster of
// one repeated byte "compresses" to that byte.
type packed struct {
	file       *image.Node
	compressed atomic.Int64
	plain      atomic.Int64
}

const packedCluster = 64 << 10

var lastPacked atomic.Pointer[packed]

func init() {
	image.Register(&image.Format{
		Name:      "convtest-packed",
		FileClaim: image.PassThroughClaim,
		Open: func(o *image.OpenContext) (image.Driver, error) {
			p := &packed{file: o.File}
			lastPacked.Store(p)
			return p, nil
		},
	})
}

func (p *packed) Size() int64  { return p.file.Size() }
func (p *packed) Close() error { return nil }
func (p *packed) BlockStatus(off, n int64) (image.Extent, error) {
	return p.file.BlockStatus(off, n)
}
func (p *packed) ReadAt(b []byte, off int64) (int, error) { return p.file.ReadAt(b, off) }
func (p *packed) WriteAt(b []byte, off int64) (int, error) {
	p.plain.Add(1)
	return p.file.WriteAt(b, off)
}
func (p *packed) CompressedClusterSize() int64 { return packedCluster }
func (p *packed) CompressCluster(dst, src []byte) ([]byte, error) {
	if len(src) == 0 || bytes.Count(src, src[:1]) != len(src) {
		return nil, nil
	}
	return append(dst[:0], src[0], byte(len(src)>>16), byte(len(src)>>8), byte(len(src))), nil
}
func (p *packed) WriteCompressed(off int64, c []byte) error {
	if off%packedCluster != 0 || len(c) != 4 {
		return fmt.Errorf("bad compressed write at %d", off)
	}
	p.compressed.Add(1)
	n := int(c[1])<<16 | int(c[2])<<8 | int(c[3])
	_, err := p.file.WriteAt(bytes.Repeat(c[:1], n), off)
	return err
}

func TestCompressedClusters(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.raw")
	size := int64(40*packedCluster + 5120)
	want := make([]byte, size)
	for c := int64(0); c*packedCluster < size; c++ {
		b := want[c*packedCluster : min((c+1)*packedCluster, size)]
		switch c % 4 {
		case 0: // compressible
			for i := range b {
				b[i] = byte(c + 1)
			}
		case 1: // not compressible
			for i := range b {
				b[i] = byte(i)
			}
		case 2: // zero
		case 3: // one byte of data in the middle of a cluster
			b[len(b)/2] = 9
		}
	}
	if err := os.WriteFile(src, want, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, w := range []bool{false, true} {
		dst := filepath.Join(dir, fmt.Sprintf("dst-%v.img", w))
		if err := os.WriteFile(dst, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(dst, size); err != nil {
			t.Fatal(err)
		}
		s, err := image.Open(src, image.OpenOptions{Format: "raw", Claim: SourceClaim})
		if err != nil {
			t.Fatal(err)
		}
		d, err := image.Open(dst, image.OpenOptions{Format: "convtest-packed", Writable: true, Claim: TargetClaim})
		if err != nil {
			t.Fatal(err)
		}
		p := lastPacked.Load()
		err = Run(context.Background(), &Copy{Sources: []*image.Node{s}, Target: d, TargetZero: true,
			Options: Options{Compress: true, OutOfOrder: w, Workers: 4, SparseSize: -1}})
		s.Close()
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, dst); !bytes.Equal(got, want) {
			i := 0
			for i < len(got) && i < len(want) && got[i] == want[i] {
				i++
			}
			t.Fatalf("-W %v: content differs at %d (cluster %d), %d bytes, want %d", w, i, i/packedCluster, len(got), len(want))
		}
		// 10 compressible clusters, and the short last one (cluster 40 is
		// case 0, compressible, at the image's end)
		if got := p.compressed.Load(); got != 11 {
			t.Errorf("-W %v: %d compressed writes, want 11", w, got)
		}
		if p.plain.Load() == 0 {
			t.Errorf("-W %v: no plain writes", w)
		}
	}
}

// TestRandomized converts random layouts with random chunk sizes, -S,
// worker counts and orders, into raw and into the clustered test format,
// and checks the bytes.
func TestRandomized(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(42))
	for i := range 100 {
		var names []string
		var want []byte
		for k := range 1 + rng.Intn(3) {
			size := int64(rng.Intn(2<<20)) / 512 * 512
			name := filepath.Join(dir, fmt.Sprintf("s%d-%d.raw", i, k))
			want = append(want, sparseSource(t, name, size, int64(i*10+k))...)
			names = append(names, name)
		}
		o := Options{
			Workers:    1 + rng.Intn(16),
			OutOfOrder: rng.Intn(2) == 0,
			SparseSize: []int64{-1, 0, 512, 4096, 64 << 10, 3 << 20}[rng.Intn(6)],
			ChunkSize:  int64(1+rng.Intn(600)) * 512,
			Compress:   rng.Intn(3) == 0,
		}
		name := fmt.Sprintf("%d: %d sources, %+v", i, len(names), o)
		dst := filepath.Join(dir, fmt.Sprintf("d%d.img", i))
		if err := os.WriteFile(dst, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(dst, int64(len(want))); err != nil {
			t.Fatal(err)
		}
		format := "raw"
		if o.Compress || rng.Intn(2) == 0 {
			format = "convtest-packed"
		}
		var srcs []*image.Node
		for _, n := range names {
			s, err := image.Open(n, image.OpenOptions{Format: "raw", Claim: SourceClaim})
			if err != nil {
				t.Fatal(err)
			}
			srcs = append(srcs, s)
		}
		d, err := image.Open(dst, image.OpenOptions{Format: format, Writable: true, Claim: TargetClaim})
		if err != nil {
			t.Fatal(err)
		}
		var last int64
		o.Progress = func(done, total int64) {
			if done < last || done > total {
				t.Errorf("%s: progress %d of %d after %d", name, done, total, last)
			}
			last = done
		}
		err = Run(context.Background(), &Copy{Sources: srcs, Target: d, TargetZero: true, Options: o})
		for _, s := range srcs {
			s.Close()
		}
		d.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := readFile(t, dst); !bytes.Equal(got, want) {
			t.Fatalf("%s (%s): content differs", name, format)
		}
	}
}

// TestDigestReadsOnce: a checksum made during the copy equals the
// checksum of the source and costs no read beyond the copy's own.
func TestDigestReadsOnce(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	data := bytes.Repeat([]byte("qimg digest "), (9<<20+1234)/12)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	reads := map[bool]int64{}
	for _, digest := range []bool{false, true} {
		setFaulty(-1, -1)
		r := &Request{Sources: []string{src}, Target: filepath.Join(dir, fmt.Sprintf("dst-%v.raw", digest)),
			SourceFormat: "convtest-faulty", Options: Options{Workers: 4, OutOfOrder: true, ChunkSize: 1 << 20}}
		var stream *checksum.Stream
		if digest {
			var err error
			if stream, err = checksum.NewStream("sha256"); err != nil {
				t.Fatal(err)
			}
			r.Digest = stream
		}
		if err := r.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		reads[digest] = faultyRange.reads.Load()
		if !digest {
			continue
		}
		got, err := stream.Sum()
		if err != nil {
			t.Fatal(err)
		}
		want := rawChecksum(t, src)
		if !bytes.Equal(got, want) {
			t.Fatalf("checksum during the copy %x, of the source %x", got, want)
		}
	}
	if reads[true] != reads[false] {
		t.Fatalf("reads with a digest %d, without %d", reads[true], reads[false])
	}
}

// TestDigestOverHoles: holes of the source that start and end inside the
// digest's blocks are hashed as zeroes, though the copy never reads them
// and its reused buffers hold other jobs' bytes there.
func TestDigestOverHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "holes.img")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	const size = 9 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewSource(5))
	holes := [][2]int64{{100 << 10, 300 << 10}, {1<<20 + 4096, 3<<20 + 12288}, {5<<20 - 8192, 5 << 20}, {7<<20 + 36864, 7<<20 + 40960}}
	at := int64(0)
	for _, h := range append(holes, [2]int64{size, size}) {
		b := make([]byte, h[0]-at)
		rnd.Read(b)
		if _, err := f.WriteAt(b, at); err != nil {
			t.Fatal(err)
		}
		at = h[1]
	}
	f.Close()
	stream, err := checksum.NewStream("sha256")
	if err != nil {
		t.Fatal(err)
	}
	r := &Request{Sources: []string{src}, Target: filepath.Join(dir, "dst.raw"), SourceFormat: "raw",
		Options: Options{Workers: 4, OutOfOrder: true, ChunkSize: 1 << 20, Digest: stream}}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := stream.Sum()
	if err != nil {
		t.Fatal(err)
	}
	if want := rawChecksum(t, src); !bytes.Equal(got, want) {
		t.Fatalf("checksum during the copy %x, of the source %x", got, want)
	}
}

// rawChecksum is qimg checksum of the raw file at path.
func rawChecksum(t *testing.T, path string) []byte {
	t.Helper()
	n, err := image.Open(path, image.OpenOptions{Format: "raw", Claim: image.ClaimRead})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	sum, err := checksum.Sum(context.Background(), n, checksum.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

// chunked is a raw-like test format that asks to be read in chunks of
// 4 MiB (image.ReadChunker), as an object store does, and records the
// largest read.
type chunked struct {
	file *image.Node
}

var chunkedLargest atomic.Int64

func init() {
	image.Register(&image.Format{
		Name:      "convtest-chunked",
		FileClaim: image.PassThroughClaim,
		Open: func(o *image.OpenContext) (image.Driver, error) {
			return &chunked{file: o.File}, nil
		},
	})
}

func (c *chunked) Size() int64      { return c.file.Size() }
func (c *chunked) Close() error     { return nil }
func (c *chunked) ReadChunk() int64 { return 4 << 20 }
func (c *chunked) BlockStatus(off, n int64) (image.Extent, error) {
	return image.Extent{Offset: off, Length: n, Allocated: true, Data: true, HostOffset: -1}, nil
}
func (c *chunked) ReadAt(p []byte, off int64) (int, error) {
	for l := chunkedLargest.Load(); int64(len(p)) > l && !chunkedLargest.CompareAndSwap(l, int64(len(p))); l = chunkedLargest.Load() {
	}
	return c.file.ReadAt(p, off)
}

// A source that asks for larger chunks is read in them, whatever the
// engine's own chunk size.
func TestSourceReadChunk(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	data := make([]byte, 16<<20)
	for i := range data {
		data[i] = byte(i>>12) | 1
	}
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "dst.raw")
	r := &Request{Sources: []string{src}, Target: dst, SourceFormat: "convtest-chunked",
		Options: Options{Workers: 2, ChunkSize: 1 << 20}}
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := chunkedLargest.Load(); got != 4<<20 {
		t.Errorf("largest read %d, want %d", got, 4<<20)
	}
	if !bytes.Equal(readFile(t, dst), data) {
		t.Fatal("target differs from the source")
	}
}

// The copy's buffers stay within poolBudget: large chunks get fewer
// workers, never none; usual chunks keep all that were asked for.
func TestPoolWorkers(t *testing.T) {
	for _, c := range []struct {
		workers int
		chunk   int64
		want    int
	}{
		{8, 2 << 20, 8},
		{16, 2 << 20, 16},
		{8, 8 << 20, 8},
		{8, 32 << 20, 6},
		{2, 32 << 20, 2},
		{8, 64 << 20, 2},
		{8, 128 << 20, 1},
		{8, 1 << 30, 1},
	} {
		got := poolWorkers(c.workers, c.chunk)
		if got != c.want {
			t.Errorf("poolWorkers(%d, %d) = %d, want %d", c.workers, c.chunk, got, c.want)
		}
		if c.chunk <= poolBudget/3 && int64(got+2)*c.chunk > poolBudget {
			t.Errorf("poolWorkers(%d, %d) = %d: %d bytes of buffers", c.workers, c.chunk, got, int64(got+2)*c.chunk)
		}
	}
}
