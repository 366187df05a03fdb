package cmd

// Every driver registers itself with image from its init.
import (
	_ "qimg/formats/blkdebug"
	_ "qimg/formats/bochs"
	_ "qimg/formats/cloop"
	_ "qimg/formats/dmg"
	_ "qimg/formats/file"
	_ "qimg/formats/http"
	_ "qimg/formats/luks"
	_ "qimg/formats/nbd"
	_ "qimg/formats/null"
	_ "qimg/formats/parallels"
	_ "qimg/formats/qcow"
	_ "qimg/formats/qcow2"
	_ "qimg/formats/qed"
	_ "qimg/formats/raw"
	_ "qimg/formats/s3"
	_ "qimg/formats/vdi"
	_ "qimg/formats/vhdx"
	_ "qimg/formats/vmdk"
	_ "qimg/formats/vpc"
)
