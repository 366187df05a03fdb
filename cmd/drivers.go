package cmd

// Every driver registers itself with image from its init.
import (
	_ "qimg/formats/bochs"
	_ "qimg/formats/cloop"
	_ "qimg/formats/file"
	_ "qimg/formats/http"
	_ "qimg/formats/nbd"
	_ "qimg/formats/parallels"
	_ "qimg/formats/qcow2"
	_ "qimg/formats/raw"
)
