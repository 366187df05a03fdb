package image

// ProtocolOf names the protocol node an image name opens, without opening
// anything: its driver, the name that driver opens, and the driver's own
// options from an option tree (nil for a plain name). imageOpts says the
// name is an option string (--image-opts). Commands use it to reach what
// lies under an image, as the object behind an s3 node.
func ProtocolOf(name string, imageOpts bool) (driver, filename string, opts map[string]string, err error) {
	var t *openTree
	switch {
	case imageOpts:
		t, err = parseOptionString(name)
	case IsJSONName(name):
		t, err = parseJSONName(name)
	default:
		driver, filename = protocolFor(name)
		return driver, filename, nil, nil
	}
	if err != nil {
		return "", "", nil, err
	}
	spec, err := specFromTree(t, "", "", true)
	if err != nil {
		return "", "", nil, err
	}
	driver = spec.protocol
	if driver == "" {
		driver, _ = protocolFor(spec.filename)
	}
	return driver, spec.filename, spec.protocolOpts.strings(), nil
}
