package image

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
)

// QEMU prints JSON from its QDict type, a hash table of 512 buckets that is
// walked bucket by bucket, newest entry first within a bucket. Tools parse
// the JSON, but people diff it, so qimg prints keys in the same order: the
// order follows from the key names and the QAPI field order alone.

// qdictBuckets is QDICT_BUCKET_MAX.
const qdictBuckets = 512

// qdictBucket is the bucket of a key: the tdb hash of the name.
func qdictBucket(key string) uint32 {
	v := uint32(0x238F13AF) * uint32(len(key))
	for i := 0; i < len(key); i++ {
		v += uint32(key[i]) << (uint(i) * 5 % 24)
	}
	return (1103515243*v + 12345) % qdictBuckets
}

// QValue is a decoded JSON value whose objects keep QEMU's key order.
type QValue struct {
	Kind   byte // '{', '[', or 0 for a scalar
	Keys   []string
	Fields map[string]*QValue
	Items  []*QValue
	Scalar json.RawMessage
}

// ToQValue encodes v with encoding/json (so struct tags decide names and
// omission) and reorders every object as a QDict would print it; the
// insertion order is the struct field order.
func ToQValue(v any) (*QValue, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	return decodeQValue(dec)
}

func decodeQValue(dec *json.Decoder) (*QValue, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			q := &QValue{Kind: '{', Fields: map[string]*QValue{}}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k := kt.(string)
				val, err := decodeQValue(dec)
				if err != nil {
					return nil, err
				}
				q.Keys = append(q.Keys, k)
				q.Fields[k] = val
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			sortQDict(q.Keys)
			return q, nil
		case '[':
			q := &QValue{Kind: '['}
			for dec.More() {
				it, err := decodeQValue(dec)
				if err != nil {
					return nil, err
				}
				q.Items = append(q.Items, it)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return q, nil
		}
		return nil, fmt.Errorf("unexpected %v", t)
	default:
		b, err := json.Marshal(t)
		if err != nil {
			return nil, err
		}
		return &QValue{Scalar: b}, nil
	}
}

// sortQDict orders keys (given in insertion order) as a QDict walk does.
func sortQDict(keys []string) {
	pos := map[string]int{}
	for i, k := range keys {
		pos[k] = i
	}
	sort.SliceStable(keys, func(i, j int) bool {
		bi, bj := qdictBucket(keys[i]), qdictBucket(keys[j])
		if bi != bj {
			return bi < bj
		}
		return pos[keys[i]] > pos[keys[j]]
	})
}

// WriteQJSON prints v as qemu's pretty JSON: four-space indent, QDict key
// order, empty lists as "[\n<indent>]".
func WriteQJSON(w io.Writer, v any) error {
	q, err := ToQValue(v)
	if err != nil {
		return err
	}
	var b strings.Builder
	q.pretty(&b, 0)
	b.WriteByte('\n')
	_, err = io.WriteString(w, b.String())
	return err
}

func (q *QValue) pretty(b *strings.Builder, depth int) {
	ind := strings.Repeat("    ", depth)
	switch q.Kind {
	case '{':
		b.WriteString("{")
		for i, k := range q.Keys {
			if i > 0 {
				b.WriteString(",")
			}
			kb, _ := json.Marshal(k)
			fmt.Fprintf(b, "\n%s    %s: ", ind, kb)
			q.Fields[k].pretty(b, depth+1)
		}
		b.WriteString("\n" + ind + "}")
	case '[':
		b.WriteString("[")
		for i, it := range q.Items {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString("\n" + ind + "    ")
			it.pretty(b, depth+1)
		}
		b.WriteString("\n" + ind + "]")
	default:
		b.Write(q.Scalar)
	}
}

// WriteHuman prints v as qemu's human "Format specific information"
// block: keys with '-' shown as ' ', lists as [i]:, nested values indented.
func (q *QValue) WriteHuman(w io.Writer, depth int) {
	ind := strings.Repeat("    ", depth)
	switch q.Kind {
	case '{':
		for _, k := range q.Keys {
			v := q.Fields[k]
			name := strings.ReplaceAll(k, "-", " ")
			if v.Kind != 0 {
				fmt.Fprintf(w, "%s%s:\n", ind, name)
				v.WriteHuman(w, depth+1)
				continue
			}
			fmt.Fprintf(w, "%s%s: %s\n", ind, name, v.scalarText())
		}
	case '[':
		for i, it := range q.Items {
			if it.Kind != 0 {
				fmt.Fprintf(w, "%s[%d]:\n", ind, i)
				it.WriteHuman(w, depth+1)
				continue
			}
			fmt.Fprintf(w, "%s[%d]: %s\n", ind, i, it.scalarText())
		}
	}
}

func (q *QValue) scalarText() string {
	var s string
	if json.Unmarshal(q.Scalar, &s) == nil {
		return s
	}
	return string(q.Scalar)
}
