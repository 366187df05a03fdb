package main

// The built binary under the limits its callers set: OpenStack nova runs
// "prlimit --as=1073741824 --cpu=30 env LC_ALL=C LANG=C qemu-img info P
// --force-share --output=json" on every image it is handed. A binary linked
// with cgo dies there now and then (pthread_create fails inside the 1 GiB
// address space), so qimg is built static (CGO_ENABLED=0), and this test
// runs the binary exactly as nova does, many times, and fails on any
// non-zero exit.

import (
	"crypto/rand"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"qimg/internal/qemutest"
)

const (
	novaAddressSpace = "1073741824"
	novaCPUSeconds   = "30"
)

// buildStatic builds qimg as the README builds it and checks that the
// result has no program interpreter (a cgo binary has ld.so as one).
func buildStatic(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "qimg")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatalf("%s is dynamically linked: build with CGO_ENABLED=0", bin)
		}
	}
	return bin
}

// underNovaLimits runs bin with args as nova runs qemu-img.
func underNovaLimits(bin string, args ...string) *exec.Cmd {
	full := append([]string{"--as=" + novaAddressSpace, "--cpu=" + novaCPUSeconds,
		"env", "LC_ALL=C", "LANG=C", bin}, args...)
	return exec.Command("prlimit", full...)
}

func TestNovaLimits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary 120 times")
	}
	qemutest.Need(t, "prlimit")
	bin := buildStatic(t)
	dir := t.TempDir()

	// A 64 MiB raw image, half random data, and a qcow2 copy of it.
	rawPath := filepath.Join(dir, "disk.raw")
	data := make([]byte, 32<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rawPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(rawPath, 64<<20); err != nil {
		t.Fatal(err)
	}
	qcowPath := filepath.Join(dir, "disk.qcow2")
	if out, err := exec.Command(bin, "convert", "-f", "raw", "-O", "qcow2", rawPath, qcowPath).CombinedOutput(); err != nil {
		t.Fatalf("convert: %v\n%s", err, out)
	}

	for i := 0; i < 100; i++ {
		out, err := underNovaLimits(bin, "info", qcowPath, "--force-share", "--output=json").CombinedOutput()
		if err != nil {
			t.Fatalf("info run %d under nova's limits: %v\n%s", i+1, err, out)
		}
		if !strings.Contains(string(out), `"format": "qcow2"`) {
			t.Fatalf("info run %d: unexpected output\n%s", i+1, out)
		}
	}
	for i := 0; i < 20; i++ {
		target := filepath.Join(dir, fmt.Sprintf("out%d.raw", i%2))
		os.Remove(target)
		args := []string{"convert", "-m", "16", "-O", "raw", qcowPath, target}
		if i%2 == 1 {
			target = filepath.Join(dir, "out.qcow2")
			os.Remove(target)
			args = []string{"convert", "-m", "16", "-c", "-O", "qcow2", rawPath, target}
		}
		if out, err := underNovaLimits(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s run %d under nova's limits: %v\n%s", strings.Join(args, " "), i+1, err, out)
		}
	}
}
