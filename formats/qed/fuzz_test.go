package qed

import (
	"testing"

	"qimg/internal/drivertest"

	_ "qimg/formats/file"
)

// Fuzz target of the QED header and table parsers, seeded from
// testdata/qed:
//
//	go test -run XXX -fuzz '^FuzzOpen$' -fuzztime 60s -fuzzminimizetime 1x ./formats/qed
var fuzzSeeds = []string{"small.qed", "backing.qed"}

func TestSeedsOpen(t *testing.T) {
	for _, name := range fuzzSeeds {
		if err := drivertest.Exercise(t, "qed", drivertest.Seed(t, "qed", name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzOpen opens whole small images: errors are fine, panics, hangs and
// large allocations are not.
func FuzzOpen(f *testing.F) {
	for _, name := range fuzzSeeds {
		f.Add(drivertest.Seed(f, "qed", name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		_ = drivertest.Exercise(t, "qed", b)
	})
}
