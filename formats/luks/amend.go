package luks

import (
	"fmt"
	"strconv"
	"strings"

	"qimg/image"
)

// amendOptions are qemu's LUKS amend options (qcow2 takes them named
// "encrypt.NAME").
var amendOptions = []image.OptionSpec{
	{Name: "state", Type: image.OptString, Help: "Select new state of affected keyslots (active/inactive)"},
	{Name: "new-secret", Type: image.OptString, Help: "New secret to set in the matching keyslots. Empty string to erase"},
	{Name: "old-secret", Type: image.OptString, Help: "Select all keyslots that match this password"},
	{Name: "keyslot", Type: image.OptNumber, Help: "Select a single keyslot to modify explicitly"},
	{Name: "iter-time", Type: image.OptNumber, Help: "Time to spend in PBKDF in milliseconds"},
}

// AmendOptions are the options Amend takes.
func (l *Image) AmendOptions() []image.OptionSpec { return amendOptions }

// CreateOnly reports whether luks takes an option only at creation.
func (l *Image) CreateOnly(option string) bool {
	for _, s := range createOptions {
		if s.Name == option {
			return true
		}
	}
	return false
}

// Amend changes key slots without --force.
func (l *Image) Amend(o image.Options, progress func(done, total int64)) error {
	return l.AmendForce(o, false, progress)
}

// AmendForce adds or erases key slots as qemu-img amend does.
func (l *Image) AmendForce(o image.Options, force bool, _ func(done, total int64)) error {
	if l.cipher == nil {
		return errNoKey
	}
	write := func(b []byte, off int64) error {
		_, err := l.file.WriteAt(b, off)
		return err
	}
	if err := l.keys.amend(write, o, "", force); err != nil {
		return err
	}
	return l.file.Flush()
}

// keyStore is where an open image's key slots live and the secret that
// opened it: what an amend of its key slots needs.
type keyStore struct {
	file   *image.Node
	r      region
	objs   *image.Objects
	secret string
}

// slotAmend is an amend of key slots, parsed as qemu's
// QCryptoBlockAmendOptionsLUKS.
type slotAmend struct {
	activate             bool
	newSecret, oldSecret string
	hasNew, hasOld       bool
	keyslot              int32 // a C int, as qemu keeps it
	hasKeyslot           bool
	iterTime             uint64
	hasIterTime          bool
}

// parseSlotAmend reads the options named prefix+NAME; qemu's messages
// name them without the prefix.
func parseSlotAmend(o image.Options, prefix string) (*slotAmend, error) {
	get := func(name string) (string, bool) { return o.Get(prefix + name) }
	a := &slotAmend{}
	switch v, ok := get("state"); {
	case !ok:
		return nil, fmt.Errorf("Parameter 'state' is missing")
	case v == "active":
		a.activate = true
	case v != "inactive":
		return nil, fmt.Errorf("Parameter 'state' does not accept value '%s'", v)
	}
	a.newSecret, a.hasNew = get("new-secret")
	a.oldSecret, a.hasOld = get("old-secret")
	if v, ok := get("keyslot"); ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 0, 64)
		if err != nil {
			return nil, fmt.Errorf("Parameter 'keyslot' expects integer")
		}
		a.keyslot, a.hasKeyslot = int32(n), true
	}
	if v, ok := get("iter-time"); ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 0, 64)
		if err != nil {
			return nil, fmt.Errorf("Parameter 'iter-time' expects integer")
		}
		a.iterTime, a.hasIterTime = uint64(n), true
	}
	return a, nil
}

// amend reads the header afresh and adds or erases key slots, as qemu's
// qcrypto_block_luks_amend_options: a new slot's key material is written
// before the header that enables it, an erased slot is disabled in the
// header before its key material is overwritten, so that a crash leaves
// the image opening with the keys it had or the keys asked for.
func (k *keyStore) amend(write writeFunc, o image.Options, prefix string, force bool) error {
	a, err := parseSlotAmend(o, prefix)
	if err != nil {
		return err
	}
	h, algs, err := readEmbeddedHeader(k.file, k.r.base, k.r.limit)
	if err != nil {
		return err
	}
	// a hostile header may place key material past its region (qcow2's
	// crypto header extension): nothing is written outside it
	inner := write
	write = func(b []byte, off int64) error {
		if off < k.r.base || off+int64(len(b)) > k.r.base+k.r.limit {
			return fmt.Errorf("Request for data outside of extension header")
		}
		return inner(b, off)
	}
	if a.activate {
		return k.addKeySlot(write, h, algs, a, force)
	}
	return k.eraseKeySlots(write, h, algs, a, force)
}

func (h *header) slotActive(i int) bool { return h.slots[i].active == slotEnabled }

func (h *header) activeSlots() int {
	n := 0
	for i := range h.slots {
		if h.slotActive(i) {
			n++
		}
	}
	return n
}

// addKeySlot stores the master key, unlocked with the image's secret,
// in the slot asked for or the first free one, under the new secret.
func (k *keyStore) addKeySlot(write writeFunc, h *header, algs *algorithms, a *slotAmend, force bool) error {
	if !a.hasNew {
		return fmt.Errorf("'new-secret' is required to activate a keyslot")
	}
	if a.hasOld {
		return fmt.Errorf("'old-secret' must not be given when activating keyslots")
	}
	slot := -1
	if a.hasKeyslot {
		if a.keyslot < 0 || a.keyslot >= numSlots {
			return fmt.Errorf("Invalid keyslot %d specified, must be between 0 and %d", uint32(a.keyslot), numSlots-1)
		}
		slot = int(a.keyslot)
	} else {
		for i := range h.slots {
			if !h.slotActive(i) {
				slot = i
				break
			}
		}
		if slot < 0 {
			return fmt.Errorf("Can't add a keyslot - all keyslots are in use")
		}
	}
	if !force && h.slotActive(slot) {
		return fmt.Errorf("Refusing to overwrite active keyslot %d - please erase it first", slot)
	}
	if err := k.checkMaterial(h, slot); err != nil {
		return err
	}
	oldPW, err := password(k.objs, k.secret)
	if err != nil {
		return err
	}
	mk, err := unlock(k.file, k.r, h, algs, oldPW)
	clear(oldPW)
	if err != nil {
		return err
	}
	defer clear(mk)
	newPW, err := password(k.objs, a.newSecret)
	if err != nil {
		return err
	}
	defer clear(newPW)
	iterTime := uint64(2000)
	if a.hasIterTime {
		iterTime = a.iterTime
	}
	iters, err := scaleIterations(pbkdf2PerSecond(algs.hash, int(h.keyBytes)), iterTime, 1, minSlotIters)
	if err != nil {
		return err
	}
	if err := storeKeySlot(write, k.r.base, h, algs, slot, newPW, mk, iters); err != nil {
		return err
	}
	return write(h.encode(), k.r.base)
}

// eraseKeySlots disables the slot asked for, or every slot the old
// secret opens, in qemu's order of checks and words.
func (k *keyStore) eraseKeySlots(write writeFunc, h *header, algs *algorithms, a *slotAmend, force bool) error {
	switch {
	case a.hasNew:
		return fmt.Errorf("'new-secret' must not be given when erasing keyslots")
	case a.hasIterTime:
		return fmt.Errorf("'iter-time' must not be given when erasing keyslots")
	}
	var oldPW []byte
	if a.hasOld {
		var err error
		if oldPW, err = password(k.objs, a.oldSecret); err != nil {
			return err
		}
		defer clear(oldPW)
	}
	var erase []int
	switch {
	case a.hasKeyslot:
		slot := int(a.keyslot)
		if a.keyslot < 0 || a.keyslot >= numSlots {
			return fmt.Errorf("Invalid keyslot %d specified, must be between 0 and %d", a.keyslot, numSlots-1)
		}
		if a.hasOld {
			opens, err := k.opens(h, algs, slot, oldPW)
			if err != nil {
				return err
			}
			if !opens {
				return fmt.Errorf("Given keyslot %d doesn't contain the given old password for erase operation", slot)
			}
		}
		if !force && !h.slotActive(slot) {
			return fmt.Errorf("Given keyslot %d is already erased (inactive) ", slot)
		}
		if !force && h.activeSlots() == 1 {
			return fmt.Errorf("Attempt to erase the only active keyslot %d which will erase all the data in the image irreversibly - refusing operation", slot)
		}
		erase = []int{slot}
	case a.hasOld:
		for i := range h.slots {
			opens, err := k.opens(h, algs, i, oldPW)
			if err != nil {
				return err
			}
			if opens {
				erase = append(erase, i)
			}
		}
		if len(erase) == 0 {
			return fmt.Errorf("No keyslots match given (old) password for erase operation")
		}
		if !force && len(erase) == h.activeSlots() {
			return fmt.Errorf("All the active keyslots match the (old) password that was given and erasing them will erase all the data in the image irreversibly - refusing operation")
		}
	default:
		return fmt.Errorf("To erase keyslot(s), either explicit keyslot index or the password currently contained in them must be given")
	}
	for _, i := range erase {
		if err := k.checkMaterial(h, i); err != nil {
			return err
		}
	}
	for _, i := range erase {
		if err := eraseKeySlot(write, k.r.base, h, i); err != nil {
			return err
		}
	}
	return nil
}

// checkMaterial refuses, before anything is written, a slot whose key
// material a hostile header places outside the header's region.
func (k *keyStore) checkMaterial(h *header, i int) error {
	s := &h.slots[i]
	if int64(s.keyOffset)*sectorSize+int64(h.keyBytes)*int64(s.stripes) > k.r.limit {
		return fmt.Errorf("Request for data outside of extension header")
	}
	return nil
}

// opens reports whether the password opens active slot i.
func (k *keyStore) opens(h *header, algs *algorithms, i int, pw []byte) (bool, error) {
	if !h.slotActive(i) {
		return false, nil
	}
	if err := checkIterations(fmt.Sprintf("Keyslot %d", i), h.slots[i].iters); err != nil {
		return false, err
	}
	if err := checkIterations("the master key digest", h.mkIters); err != nil {
		return false, err
	}
	mk, err := tryKeySlot(k.file, k.r, h, algs, i, pw)
	clear(mk)
	return mk != nil, err
}

// eraseKeySlot disables slot i in the header, then overwrites its key
// material with random bytes, as qemu's qcrypto_block_luks_erase_key.
func eraseKeySlot(write writeFunc, base int64, h *header, i int) error {
	s := &h.slots[i]
	clear(s.salt[:])
	s.iters = 0
	s.active = slotDisabled
	if err := write(h.encode(), base); err != nil {
		return err
	}
	garbage := make([]byte, int64(h.keyBytes)*int64(s.stripes))
	if err := randomBytes(garbage); err != nil {
		return err
	}
	return write(garbage, base+int64(s.keyOffset)*sectorSize)
}
