#!/usr/bin/env bash
# bench/vmdk.sh: time qimg and qemu-img on the same files in one run:
# a raw image to a streamOptimized VMDK (deflate on every core against
# qemu-img's one thread) and that VMDK back to raw, and print the ratios
# (qemu-img's time / qimg's: above 1 qimg is faster) and qimg's peak RSS,
# then checks qimg's VMDK against the source and compares its size with
# qemu-img's (qimg deflates at zlib's level with a faster deflater).
#
# The raw image is text (compressible as disks are) with zero runs.
#
# Environment:
#   SIZE=4G    size of the raw image
#   REPS=3     runs per tool (the best counts; a first run warms the cache)
#   DIR=…      where the images go (default: a new directory under /var/tmp)
#   QIMG=…     the qimg binary (default: built from this repository)
#   KEEP=1     keep DIR afterwards
set -euo pipefail
SIZE=${SIZE:-4G}
REPS=${REPS:-3}
source "$(dirname "$0")/lib.sh"
bench_setup qimg-bench-vmdk
(cd "$ROOT" && CGO_ENABLED=0 go build -o "$DIR/gen" ./bench/gen)
"$DIR/gen" text "$DIR/src.raw" "$SIZE"
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$DIR/src.raw" "$DIR/ref.vmdk"

# rss CASE: qimg's peak resident set in MiB for one case
rss() {
	"$1" true
	/usr/bin/time -f %M "$QIMG" "${ARGS[@]}" 2>&1 >/dev/null | tail -1 | awk '{ printf "%.0f", $1 / 1024 }'
}

# to_stream/to_raw TOOL: one conversion (TOOL true only sets ARGS)
to_stream() {
	rm -f "$DIR/out.vmdk"
	ARGS=(convert -f raw -O vmdk -o subformat=streamOptimized "$DIR/src.raw" "$DIR/out.vmdk")
	if [[ "$1" != true ]]; then "$1" "${ARGS[@]}"; fi
}
to_raw() {
	rm -f "$DIR/out.raw"
	ARGS=(convert -f vmdk -O raw "$DIR/ref.vmdk" "$DIR/out.raw")
	if [[ "$1" != true ]]; then "$1" "${ARGS[@]}"; fi
}

printf '| case | qemu-img | qimg | ratio | qimg peak RSS |\n| --- | --- | --- | --- | --- |\n'
for c in to_stream to_raw; do
	r=$(best "$c" qemu-img)
	q=$(best "$c" "$QIMG")
	m=$(rss "$c" "$QIMG")
	printf '| %s (%s) | %s s | %s s | %s | %s MiB |\n' "$c" "$SIZE" "$r" "$q" "$(ratio "$r" "$q")" "$m"
done
# out.vmdk is qimg's, from to_stream's RSS run: check it and weigh it
qemu-img compare -q -f raw -F vmdk "$DIR/src.raw" "$DIR/out.vmdk"
q=$(stat -c %s "$DIR/out.vmdk")
r=$(stat -c %s "$DIR/ref.vmdk")
printf '\nstreamOptimized size: qemu-img %s bytes, qimg %s bytes (%+.1f%%), same data\n' "$r" "$q" \
	"$(awk -v q="$q" -v r="$r" 'BEGIN { print 100 * (q - r) / r }')"
