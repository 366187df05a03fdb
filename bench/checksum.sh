#!/usr/bin/env bash
# bench/checksum.sh: time qimg checksum against sha256sum (and blksum where
# installed) in one run, and print the ratio (their time / qimg's: above 1
# qimg is faster).
#
# Images: a raw file with half its 1 MiB runs random data and half zeroes
# written as data (what sha256sum must read whole), its qcow2 copy, and a
# 90%-empty qcow2 of the same size.
#
# Environment:
#   SIZE=4G    size of the images
#   REPS=3     runs per tool (the best counts; a first run warms the cache)
#   DIR=…      where the images go (default: a new directory under /var/tmp)
#   QIMG=…     the qimg binary (default: built from this repository)
#   KEEP=1     keep DIR afterwards
set -euo pipefail
SIZE=${SIZE:-4G}
REPS=${REPS:-3}
source "$(dirname "$0")/lib.sh"
bench_setup qimg-bench-checksum
(cd "$ROOT" && CGO_ENABLED=0 go build -o "$DIR/gen" ./bench/gen)

"$DIR/gen" halfrandom "$DIR/half.raw" "$SIZE"
qemu-img convert -f raw -O qcow2 "$DIR/half.raw" "$DIR/half.qcow2"
size_bytes=$(stat -c %s "$DIR/half.raw")
"$DIR/gen" sparse "$DIR/sparse.raw" "$SIZE" $((size_bytes / 10))
qemu-img convert -f raw -O qcow2 "$DIR/sparse.raw" "$DIR/sparse.qcow2"


printf '| case | reference | reference time | qimg | ratio |\n| --- | --- | --- | --- | --- |\n'
sha=$(best sha256sum "$DIR/half.raw")
for img in half.raw half.qcow2 sparse.qcow2; do
	q=$(best "$QIMG" checksum "$DIR/$img")
	printf '| %s (%s) | sha256sum of half.raw | %s s | %s s | %s |\n' "$img" "$SIZE" "$sha" "$q" "$(ratio "$sha" "$q")"
done
if command -v blksum >/dev/null; then
	for img in half.raw half.qcow2; do
		b=$(best blksum "$DIR/$img")
		q=$(best "$QIMG" checksum "$DIR/$img")
		printf '| %s | blksum | %s s | %s s | %s |\n' "$img" "$b" "$q" "$(ratio "$b" "$q")"
	done
fi

# convert --checksum against convert followed by checksum of the target:
# the digest rides on the copy's reads
both() { "$QIMG" convert -O qcow2 "$1" "$DIR/out.qcow2" && "$QIMG" checksum "$DIR/out.qcow2"; }
for img in half.raw sparse.qcow2; do
	rm -f "$DIR/out.qcow2"
	two=$(best both "$DIR/$img")
	one=$(best "$QIMG" convert --checksum -O qcow2 "$DIR/$img" "$DIR/out.qcow2")
	printf '| convert --checksum %s | convert, then checksum | %s s | %s s | %s |\n' "$img" "$two" "$one" "$(ratio "$two" "$one")"
done
