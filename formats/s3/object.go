package s3

import (
	"github.com/minio/minio-go/v7"

	"qimg/image"
)

// Object is an object a command names, for what it does with the object
// itself rather than with the image in it (its stored checksum, its
// unfinished uploads): by s3://bucket/key, or by the options of an s3
// node in an option string or json: name.
type Object struct {
	obj  object
	opts map[string]string
}

// ObjectNamed is the object an image name opens (imageOpts: the name is
// an option string); nil when the name is of something else.
func ObjectNamed(name string, imageOpts bool) (*Object, error) {
	driver, filename, opts, err := image.ProtocolOf(name, imageOpts)
	if err != nil || driver != "s3" {
		return nil, err
	}
	obj, err := parseName(filename)
	if err != nil {
		return nil, err
	}
	return &Object{obj: obj, opts: opts}, nil
}

// Name is the object's s3:// name.
func (o *Object) Name() string { return o.obj.name }

func (o *Object) client() (object, *minio.Core, error) {
	c, _, err := clientFor(o.obj, o.opts)
	return o.obj, c, err
}
