package image

import "fmt"

// Objects are the user-creatable objects of one command line (qemu's
// --object): secrets for encrypted images and, later, TLS credentials for
// NBD. Drivers look them up by id; a nil *Objects has none.
type Objects struct {
	secrets map[string][]byte
}

// AddSecret records the bytes of secret id.
func (o *Objects) AddSecret(id string, data []byte) {
	if o.secrets == nil {
		o.secrets = map[string][]byte{}
	}
	o.secrets[id] = data
}

// Secret returns the bytes of secret id, in qemu's words when there is none.
func (o *Objects) Secret(id string) ([]byte, error) {
	if o != nil {
		if s, ok := o.secrets[id]; ok {
			return s, nil
		}
	}
	return nil, fmt.Errorf("No secret with id '%s'", id)
}
