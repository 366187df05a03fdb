package image

import (
	"slices"
	"testing"
)

// TestSplitCommas: ",," is a literal comma, single commas split, and the
// three readers of option lists keep or refuse empty items as qemu does.
func TestSplitCommas(t *testing.T) {
	for _, c := range []struct {
		in                 string
		items, keyval, opt []string
		optErr             bool
	}{
		{in: "", items: []string{""}, keyval: nil, opt: []string{""}, optErr: true},
		{in: "a", items: []string{"a"}, keyval: []string{"a"}, opt: []string{"a"}},
		{in: "a=1,b=2", items: []string{"a=1", "b=2"}, keyval: []string{"a=1", "b=2"}, opt: []string{"a=1", "b=2"}},
		{in: "a,", items: []string{"a", ""}, keyval: []string{"a", ""}, opt: []string{"a"}, optErr: true},
		{in: ",a", items: []string{"", "a"}, keyval: []string{"", "a"}, opt: []string{"", "a"}, optErr: true},
		{in: "f=x,,y,b", items: []string{"f=x,y", "b"}, keyval: []string{"f=x,y", "b"}, opt: []string{"f=x,y", "b"}},
		{in: "f=x,,", items: []string{"f=x,"}, keyval: []string{"f=x,"}, opt: []string{"f=x,"}},
		{in: ",,,", items: []string{",", ""}, keyval: []string{",", ""}, opt: []string{","}, optErr: true},
	} {
		if got := splitCommas(c.in); !slices.Equal(got, c.items) {
			t.Errorf("splitCommas(%q) = %q, want %q", c.in, got, c.items)
		}
		if got, _ := splitKeyval(c.in); !slices.Equal(got, c.keyval) {
			t.Errorf("splitKeyval(%q) = %q, want %q", c.in, got, c.keyval)
		}
		if got := splitOptionString(c.in); !slices.Equal(got, c.opt) {
			t.Errorf("splitOptionString(%q) = %q, want %q", c.in, got, c.opt)
		}
		if _, err := splitOptions(c.in); (err != nil) != c.optErr {
			t.Errorf("splitOptions(%q): error %v, want error %v", c.in, err, c.optErr)
		}
	}
}
