package blkdebug

import (
	"bytes"
	"testing"
)

// FuzzConfig: any config file parses into sections and rules, or fails
// with an error; never a panic, and no more sections than lines.
func FuzzConfig(f *testing.F) {
	for _, seed := range []string{
		"[inject-error]\nevent = \"l2_update\"\nerrno = \"5\"\nonce = \"on\"\n",
		"[set-state]\nevent = \"write_aio\"\nstate = \"1\"\nnew_state = \"2\"\n\n# c\n[inject-error \"x\"]\nevent = \"flush_to_disk\"\n",
		"[inject-error]\nsector = \"18446744073709551615\"\niotype = \"read,write\"\n",
		"[\n=\n\"\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		groups, err := parseConfig(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(groups) > bytes.Count(b, []byte{'\n'})+1 {
			t.Fatalf("%d sections from %d lines", len(groups), bytes.Count(b, []byte{'\n'})+1)
		}
		for _, g := range groups {
			if err := checkSection(g); err != nil {
				continue
			}
			_, _ = newRule(g)
		}
	})
}
