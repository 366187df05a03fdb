package image

import (
	"fmt"
	"strings"
	"sync/atomic"
)

// Objects are the user-creatable objects of one command line (qemu's
// --object): secrets for encrypted images and TLS credentials and throttle
// groups for later users. Drivers look them up by id; a nil *Objects has
// none.
type Objects struct {
	secrets map[string][]byte
	objects map[string]*Object
}

// Object is one --object definition other than a secret's data: its type,
// id and properties as given (secrets keep no data here).
type Object struct {
	Type  string
	ID    string
	Props map[string]string
}

// AddSecret records the bytes of secret id.
func (o *Objects) AddSecret(id string, data []byte) {
	if o.secrets == nil {
		o.secrets = map[string][]byte{}
	}
	o.secrets[id] = data
	o.add(&Object{Type: "secret", ID: id})
}

func (o *Objects) add(obj *Object) {
	if o.objects == nil {
		o.objects = map[string]*Object{}
	}
	o.objects[obj.ID] = obj
}

// Secret returns the bytes of secret id, in qemu's words when there is none.
func (o *Objects) Secret(id string) ([]byte, error) {
	if o != nil {
		if s, ok := o.secrets[id]; ok {
			return s, nil
		}
		if _, ok := o.objects[id]; ok {
			return nil, fmt.Errorf("Object with id '%s' is not a secret", id)
		}
	}
	return nil, fmt.Errorf("No secret with id '%s'", id)
}

// Object returns the object with id, nil when there is none.
func (o *Objects) Object(id string) *Object {
	if o == nil {
		return nil
	}
	return o.objects[id]
}

// Wipe overwrites the secrets' bytes; the objects are unusable afterwards.
func (o *Objects) Wipe() {
	if o == nil {
		return
	}
	for id, s := range o.secrets {
		clear(s)
		delete(o.secrets, id)
	}
}

// commandObjects are the objects of the running command, for the opens
// and creates that name none themselves.
var commandObjects atomic.Pointer[Objects]

// UseObjects makes objs the objects of every later Open and create that
// names none; the ones used before are wiped. nil just wipes them.
func UseObjects(objs *Objects) {
	if old := commandObjects.Swap(objs); old != nil && old != objs {
		old.Wipe()
	}
}

// CommandObjects returns the objects UseObjects set, nil when none.
func CommandObjects() *Objects { return commandObjects.Load() }

// KeySecrets are the options of o that name key secrets ("key-secret",
// "encrypt.key-secret"), which qemu-img also opens a target it has just
// created with (img_add_key_secrets); nil when there are none.
func KeySecrets(o Options) map[string]string {
	var m map[string]string
	for _, k := range o.Keys() {
		if strings.HasSuffix(k, "key-secret") {
			if m == nil {
				m = map[string]string{}
			}
			m[k], _ = o.Get(k)
		}
	}
	return m
}

// objectTypes are the user-creatable types qemu-img 7.2 lists for
// "--object help", with the properties qimg validates for some of them.
var objectTypes = []string{
	"authz-list", "authz-list-file", "authz-simple", "main-loop", "pr-manager-helper",
	"secret", "secret_keyring", "thread-context", "throttle-group", "tls-cipher-suites",
	"tls-creds-anon", "tls-creds-psk", "tls-creds-x509",
}

// ObjectHelp answers "--object help" and "--object TYPE,help" with
// qemu-img's text; ok is false when def asks for no help.
func ObjectHelp(def string) (text string, ok bool) {
	items, err := splitKeyval(def)
	if err != nil || len(items) == 0 {
		return "", false
	}
	if items[0] == "help" || items[0] == "?" {
		return "List of user creatable objects:\n  " + strings.Join(objectTypes, "\n  ") + "\n", true
	}
	for _, it := range items[1:] {
		if it == "help" || it == "?" {
			props, known := objectHelpProps[items[0]]
			if !known {
				return "", false
			}
			return items[0] + " options:\n  " + strings.Join(props, "\n  ") + "\n", true
		}
	}
	return "", false
}

var objectHelpProps = map[string][]string{
	"secret": {"data=<string>", "file=<string>", "format=<QCryptoSecretFormat>", "iv=<string>", "keyid=<string>"},
	"tls-creds-x509": {"dir=<string>", "endpoint=<QCryptoTLSCredsEndpoint>", "passwordid=<string>",
		"priority=<string>", "sanity-check=<bool>", "verify-peer=<bool>"},
	"tls-creds-psk":  {"dir=<string>", "endpoint=<QCryptoTLSCredsEndpoint>", "priority=<string>", "username=<string>", "verify-peer=<bool>"},
	"tls-creds-anon": {"dir=<string>", "endpoint=<QCryptoTLSCredsEndpoint>", "priority=<string>", "verify-peer=<bool>"},
}

// ParseObject parses one --object definition (qemu's keyval syntax, the
// type first: "secret,id=sec0,file=/run/pw") and adds the object, with
// qemu-img 7.2's checks and words. A secret's data never appears in an
// error.
func (o *Objects) ParseObject(def string) error {
	props, err := parseKeyval(def)
	if err != nil {
		return err
	}
	typ, ok := props.take("qom-type")
	if !ok {
		return fmt.Errorf("Parameter 'qom-type' is missing")
	}
	if !knownObjectType(typ) {
		return fmt.Errorf("Parameter 'qom-type' does not accept value '%s'", typ)
	}
	id, ok := props.take("id")
	if !ok {
		return fmt.Errorf("Parameter 'id' is missing")
	}
	if !isIdentifier(id) {
		return fmt.Errorf("Parameter 'id' expects an identifier\nIdentifiers consist of letters, digits, '-', '.', '_', starting with a letter.")
	}
	switch typ {
	case "secret":
		return o.parseSecret(id, props)
	case "tls-creds-x509", "tls-creds-psk", "tls-creds-anon":
		return o.parseTLSCreds(typ, id, props)
	case "throttle-group":
		return o.parseThrottleGroup(id, props)
	}
	return o.addChecked(&Object{Type: typ, ID: id, Props: props.rest()})
}

// addChecked adds an object whose id must be new, in qemu's words.
func (o *Objects) addChecked(obj *Object) error {
	if o.Object(obj.ID) != nil {
		return fmt.Errorf("attempt to add duplicate property '%s' to object (type 'container')", obj.ID)
	}
	o.add(obj)
	return nil
}

func knownObjectType(t string) bool {
	for _, k := range objectTypes {
		if k == t {
			return true
		}
	}
	return false
}

// isIdentifier is qemu's id_wellformed: a letter, then letters, digits,
// '-', '.' and '_'.
func isIdentifier(s string) bool {
	if s == "" || !isLetter(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isLetter(c) && !(c >= '0' && c <= '9') && c != '-' && c != '.' && c != '_' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// keyvals are the properties of one definition; take removes what a
// type consumes, and whatever is left is unexpected.
type keyvals struct {
	order  []string
	values map[string]string
}

func (k *keyvals) take(name string) (string, bool) {
	v, ok := k.values[name]
	delete(k.values, name)
	return v, ok
}

// unexpected names the first property (in the order given) no member took.
func (k *keyvals) unexpected() error {
	for _, name := range k.order {
		if _, ok := k.values[name]; ok {
			return fmt.Errorf("Parameter '%s' is unexpected", name)
		}
	}
	return nil
}

func (k *keyvals) rest() map[string]string {
	m := map[string]string{}
	for n, v := range k.values {
		m[n] = v
	}
	return m
}

// parseKeyval splits "type,key=value,..." as qemu's keyval_parse with the
// implied key qom-type: ",," is a literal comma, a later key overrides an
// earlier one, and a dotted key names a member of its first part.
func parseKeyval(def string) (*keyvals, error) {
	kv := &keyvals{values: map[string]string{}}
	items, err := splitKeyval(def)
	if err != nil {
		return nil, err
	}
	for i, it := range items {
		name, value, ok := strings.Cut(it, "=")
		if !ok {
			if i > 0 {
				return nil, fmt.Errorf("Expected '=' after parameter '%s'", it)
			}
			name, value = "qom-type", it
		}
		if top, _, dotted := strings.Cut(name, "."); dotted {
			name = top
		}
		if _, seen := kv.values[name]; !seen {
			kv.order = append(kv.order, name)
		}
		kv.values[name] = value
	}
	return kv, nil
}

func splitKeyval(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	return splitCommas(s), nil
}

// checkEnum refuses a value outside an enumeration, in qemu's words.
func checkEnum(name, value string, allowed ...string) error {
	for _, a := range allowed {
		if value == a {
			return nil
		}
	}
	return fmt.Errorf("Parameter '%s' does not accept value '%s'", name, value)
}

// checkKeyvalBool accepts keyval's boolean words.
func checkKeyvalBool(name, value string) error {
	switch value {
	case "on", "off", "yes", "no", "true", "false", "y", "n":
		return nil
	}
	return fmt.Errorf("Parameter '%s' expects 'on' or 'off'", name)
}
