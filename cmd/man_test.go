package cmd

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestManPagesUpToDate fails when man/ is not what the command tree
// generates: run "go generate ./cmd" and commit man/.
func TestManPagesUpToDate(t *testing.T) {
	pages, err := ManPages()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := pages["qimg.1"]; !ok {
		t.Fatal("no qimg.1 generated")
	}
	dir := filepath.Join("..", "man")
	for name, want := range pages {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("man/%s: %v; run: go generate ./cmd", name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("man/%s is stale; run: go generate ./cmd", name)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "qimg*.1"))
	for _, f := range files {
		if _, ok := pages[filepath.Base(f)]; !ok {
			t.Errorf("man/%s belongs to no command; run: go generate ./cmd", filepath.Base(f))
		}
	}
}

// The pages do not depend on the day they are generated.
func TestManPagesReproducible(t *testing.T) {
	a, err := ManPages()
	if err != nil {
		t.Fatal(err)
	}
	b, err := ManPages()
	if err != nil {
		t.Fatal(err)
	}
	for name := range a {
		if !bytes.Equal(a[name], b[name]) {
			t.Errorf("%s differs between two generations", name)
		}
		if bytes.Contains(a[name], []byte("Auto generated")) {
			t.Errorf("%s carries a generation stamp", name)
		}
	}
}
