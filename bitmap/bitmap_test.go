package bitmap

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"qimg/create"
	_ "qimg/formats/file"
	_ "qimg/formats/qcow2"
	_ "qimg/formats/raw"
	"qimg/image"
)

func newImage(t *testing.T, size int64) string {
	t.Helper()
	name := filepath.Join(t.TempDir(), "a.qcow2")
	p, err := create.Prepare(create.Request{Filename: name, Format: "qcow2", Size: size})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(); err != nil {
		t.Fatal(err)
	}
	return name
}

func list(t *testing.T, name string) []image.BitmapInfo {
	t.Helper()
	n, err := image.Open(name, image.OpenOptions{Format: "qcow2", Claim: image.ClaimRead})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	l, err := n.Driver().(image.BitmapStore).Bitmaps()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func run(name, bitmap string, g int64, ops ...Op) error {
	r := Request{Filename: name, Format: "qcow2", Bitmap: bitmap, Granularity: g, Ops: ops}
	return r.Run()
}

func TestOperationsInOrder(t *testing.T) {
	img := newImage(t, 64<<20)
	if err := run(img, "a", 0, Op{Kind: Add}, Op{Kind: Disable}); err != nil {
		t.Fatal(err)
	}
	if err := run(img, "b", 1<<20, Op{Kind: Add}, Op{Kind: Merge, Source: "a"}, Op{Kind: Disable}, Op{Kind: Enable}); err != nil {
		t.Fatal(err)
	}
	want := []image.BitmapInfo{{Name: "a", Granularity: 65536}, {Name: "b", Granularity: 1 << 20, Enabled: true}}
	if got := list(t, img); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v want %+v", got, want)
	}
	// remove and add again under the same name, in one call
	if err := run(img, "a", 4096, Op{Kind: Remove}, Op{Kind: Add}); err != nil {
		t.Fatal(err)
	}
	want = []image.BitmapInfo{{Name: "b", Granularity: 1 << 20, Enabled: true}, {Name: "a", Granularity: 4096, Enabled: true}}
	if got := list(t, img); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v want %+v", got, want)
	}
}

func TestFailingLastOperationChangesNothing(t *testing.T) {
	img := newImage(t, 64<<20)
	if err := run(img, "a", 0, Op{Kind: Add}); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, ops := range [][]Op{
		{{Kind: Disable}, {Kind: Clear}, {Kind: Merge, Source: "nope"}},
		{{Kind: Remove}, {Kind: Add}, {Kind: Add}},
		{{Kind: Remove}, {Kind: Enable}},
	} {
		err := run(img, "a", 0, ops...)
		var oe *OpError
		if !errors.As(err, &oe) || oe.Op != ops[len(ops)-1].Kind {
			t.Fatalf("%v: err %v, want the last operation to fail", ops, err)
		}
		after, _ := os.ReadFile(img)
		if string(after) != string(before) {
			t.Fatalf("%v: the image changed", ops)
		}
	}
	// a call that changes nothing leaves the file alone
	if err := run(img, "a", 0, Op{Kind: Enable}); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(img); string(after) != string(before) {
		t.Fatal("enabling an enabled bitmap rewrote the image")
	}
}
