package convert

import (
	"fmt"

	"qimg/image"
)

// checkBitmaps refuses, before anything is created, what qemu-img's
// --bitmaps refuses: several sources, and inconsistent (in-use) bitmaps
// unless they are to be skipped.
func (r *Request) checkBitmaps(sources []*image.Node) error {
	if len(sources) > 1 {
		return image.Errorf(nil, "Copying bitmaps only possible with single source")
	}
	if !supportsBitmaps(sources[0]) {
		return image.Errorf(image.ErrUnsupported, "Source lacks bitmap support")
	}
	infos, err := sourceBitmaps(sources[0])
	if err != nil || r.SkipBrokenBitmaps {
		return err
	}
	for i := len(infos) - 1; i >= 0; i-- {
		if infos[i].InUse {
			return image.Errorf(nil, "Cannot copy inconsistent bitmap '%s'. Try --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it", infos[i].Name)
		}
	}
	return nil
}

func sourceBitmaps(src *image.Node) ([]image.BitmapInfo, error) {
	s, ok := src.Driver().(image.BitmapStore)
	if !ok {
		return nil, nil
	}
	return s.Bitmaps()
}

// copyBitmaps adds the source's persistent bitmaps to the target after the
// data is copied, with their granularity, bits and enabled state, in one
// store of the target's bitmap set. Inconsistent ones are skipped with a
// warning (checkBitmaps has refused them unless skipping was asked).
func (r *Request) copyBitmaps(src, target *image.Node, warn func(string)) error {
	dst, ok := target.Driver().(image.BitmapStore)
	if !ok || !supportsBitmaps(target) {
		return bitmapsUnsupported(target.Format)
	}
	infos, err := sourceBitmaps(src)
	if err != nil {
		return err
	}
	store := src.Driver().(image.BitmapStore)
	existing, err := dst.Bitmaps()
	if err != nil {
		return err
	}
	set := make([]image.BitmapUpdate, 0, len(existing)+len(infos))
	for _, e := range existing {
		set = append(set, image.BitmapUpdate{BitmapInfo: e})
	}
	// qemu-img walks the bitmaps newest first, so its first complaint
	// names the last one stored
	added := make([]image.BitmapUpdate, len(infos))
	for i := len(infos) - 1; i >= 0; i-- {
		b := infos[i]
		if b.InUse {
			warn(fmt.Sprintf("Skipping inconsistent bitmap '%s'", b.Name))
			continue
		}
		for _, e := range existing {
			if e.Name == b.Name {
				return image.Errorf(nil, "Failed to create bitmap %s: Bitmap already exists: %s", b.Name, b.Name)
			}
		}
		others := make([]image.BitmapInfo, 0, len(set))
		for _, u := range set {
			others = append(others, u.BitmapInfo)
		}
		if err := dst.CanStoreBitmap(b.Name, b.Granularity, others); err != nil {
			return image.Errorf(err, "Failed to create bitmap %s: %v", b.Name, err)
		}
		data, err := store.LoadBitmap(b.Name)
		if err != nil {
			return fmt.Errorf("Failed to read bitmap %s: %w", b.Name, err)
		}
		added[i] = image.BitmapUpdate{BitmapInfo: b, Data: data}
	}
	for _, a := range added {
		if a.Data != nil {
			set = append(set, a)
		}
	}
	if len(set) == len(existing) {
		return nil
	}
	return dst.StoreBitmaps(set)
}

// supportsBitmaps reports whether a node's format can hold persistent
// bitmaps (qcow2 v2 images cannot).
// holdsBitmaps tells whether a target created with these options can hold
// persistent bitmaps: qcow2 version 3 only. qemu-img finds out after the
// copy and leaves the target; qimg refuses before making or emptying it.
func holdsBitmaps(format string, o image.Options) bool {
	compat := o.String("compat", "1.1")
	return format == "qcow2" && compat != "0.10" && compat != "v2"
}

func bitmapsUnsupported(format string) error {
	return image.Errorf(image.ErrUnsupported, "Format driver '%s' does not support bitmaps", format)
}

func supportsBitmaps(n *image.Node) bool {
	if _, ok := n.Driver().(image.BitmapStore); !ok {
		return false
	}
	s, ok := n.Driver().(interface{ SupportsBitmaps() bool })
	return !ok || s.SupportsBitmaps()
}
