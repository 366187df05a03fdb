#!/usr/bin/env bash
# bench/nbd.sh: time qimg and qemu-img (and nbdcopy where installed)
# converting a qcow2 image exported read-only by qemu-nbd (-r -e 8, which
# allows multi-conn) over a Unix socket to a local qcow2 and a local raw
# image, in one run, and print the ratios (their time / qimg's: above 1
# qimg is faster). nbdcopy writes qcow2 through a qemu-nbd it starts.
#
# The source is text (compressible as disks are) with zero runs, as qcow2.
#
# Environment:
#   SERVER=nbdkit  serve a raw copy with nbdkit's file plugin instead
#              (what KubeVirt CDI imports from); nbdcopy then writes qcow2
#              through qemu-nbd as before
#   SIZE=4G    size of the image
#   REPS=3     runs per tool (the best counts; a first run warms the cache)
#   DIR=…      where the images go (default: a new directory under /var/tmp)
#   QIMG=…     the qimg binary (default: built from this repository)
#   KEEP=1     keep DIR afterwards
set -euo pipefail
SIZE=${SIZE:-4G}
REPS=${REPS:-3}
source "$(dirname "$0")/lib.sh"
bench_setup qimg-bench-nbd
command -v qemu-nbd >/dev/null || { echo "bench: qemu-nbd is not installed" >&2; exit 1; }
(cd "$ROOT" && CGO_ENABLED=0 go build -o "$DIR/gen" ./bench/gen)
"$DIR/gen" text "$DIR/src.raw" "$SIZE"
qemu-img convert -f raw -O qcow2 "$DIR/src.raw" "$DIR/src.qcow2"

sock=$DIR/nbd.sock
if [[ ${SERVER:-qemu-nbd} == nbdkit ]]; then
	nbdkit -f -U "$sock" file "$DIR/src.raw" &
else
	rm "$DIR/src.raw"
	qemu-nbd -r -e 8 -f qcow2 -k "$sock" --persistent "$DIR/src.qcow2" &
fi
nbd_pid=$!
trap 'kill $nbd_pid 2>/dev/null; if [[ "${KEEP:-}" != 1 ]]; then rm -rf "$DIR"; fi' EXIT
for _ in $(seq 100); do [[ -S "$sock" ]] && break; sleep 0.1; done
url="nbd+unix:///?socket=$sock"

copy() { rm -f "$DIR/out.img"; "$@"; }
# nbdcopy writes qcow2 through a qemu-nbd it starts on a target made first
nbdcopy_qcow2() {
	qemu-img create -q -f qcow2 "$DIR/out.img" "$SIZE"
	nbdcopy "$url" -- [ qemu-nbd -f qcow2 "$DIR/out.img" ]
}
row() { printf '| %s | %s | %s s | %s s | %s |\n' "$1" "$2" "$3" "$4" "$(ratio "$3" "$4")"; }
printf '| case (%s, %s) | reference | reference time | qimg | ratio |\n| --- | --- | --- | --- | --- |\n' "$SIZE" "${SERVER:-qemu-nbd}"
for fmt in qcow2 raw; do
	q=$(best copy "$QIMG" convert -f raw -O "$fmt" "$url" "$DIR/out.img")
	qemu-img compare -f qcow2 -F "$fmt" "$DIR/src.qcow2" "$DIR/out.img" >/dev/null
	r=$(best copy qemu-img convert -f raw -O "$fmt" "$url" "$DIR/out.img")
	row "nbd → $fmt" qemu-img "$r" "$q"
	if command -v nbdcopy >/dev/null; then
		if [[ $fmt == qcow2 ]]; then
			n=$(best copy nbdcopy_qcow2)
		else
			n=$(best copy nbdcopy "$url" "$DIR/out.img")
		fi
		qemu-img compare -f qcow2 -F "$fmt" "$DIR/src.qcow2" "$DIR/out.img" >/dev/null
		row "nbd → $fmt" nbdcopy "$n" "$q"
	fi
done
# wall-clock ratios mean little on a busy machine: say how busy it was
printf '\nload average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)"
