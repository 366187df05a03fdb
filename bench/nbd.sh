#!/usr/bin/env bash
# bench/nbd.sh: time qimg and qemu-img (and nbdcopy where installed)
# converting a qcow2 image exported read-only by qemu-nbd (-r -e 8, which
# allows multi-conn) over a Unix socket to a local qcow2 image, in one run,
# and print the ratios (their time / qimg's: above 1 qimg is faster).
#
# The source is text (compressible as disks are) with zero runs, as qcow2.
#
# Environment:
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
rm "$DIR/src.raw"

sock=$DIR/nbd.sock
qemu-nbd -r -e 8 -f qcow2 -k "$sock" --persistent "$DIR/src.qcow2" &
nbd_pid=$!
trap 'kill $nbd_pid 2>/dev/null; if [[ "${KEEP:-}" != 1 ]]; then rm -rf "$DIR"; fi' EXIT
for _ in $(seq 100); do [[ -S "$sock" ]] && break; sleep 0.1; done
url="nbd+unix:///?socket=$sock"

copy() { rm -f "$DIR/out.qcow2"; "$@"; }
printf '| case (%s) | reference | reference time | qimg | ratio |\n| --- | --- | --- | --- | --- |\n' "$SIZE"
q=$(best copy "$QIMG" convert -f raw -O qcow2 "$url" "$DIR/out.qcow2")
r=$(best copy qemu-img convert -f raw -O qcow2 "$url" "$DIR/out.qcow2")
printf '| nbd → qcow2 | qemu-img | %s s | %s s | %s |\n' "$r" "$q" "$(ratio "$r" "$q")"
qemu-img compare -f qcow2 -F qcow2 "$DIR/src.qcow2" "$DIR/out.qcow2" >/dev/null
q=$(best copy "$QIMG" convert -f raw -O raw "$url" "$DIR/out.qcow2")
r=$(best copy qemu-img convert -f raw -O raw "$url" "$DIR/out.qcow2")
printf '| nbd → raw | qemu-img | %s s | %s s | %s |\n' "$r" "$q" "$(ratio "$r" "$q")"
if command -v nbdcopy >/dev/null; then
	n=$(best copy nbdcopy "$url" "$DIR/out.qcow2")
	printf '| nbd → raw | nbdcopy | %s s | %s s | %s |\n' "$n" "$q" "$(ratio "$n" "$q")"
fi
