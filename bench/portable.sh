#!/usr/bin/env bash
# bench/portable.sh: time convert with the portable fallback build
# (-tags qimg_portable: reads and writes instead of copy_file_range,
# written zeroes instead of punched holes, the page cache for -t none, POSIX
# locks) against the normal Linux build, on the same files in one run, and
# print per case the best time of each and the ratio (portable seconds /
# Linux seconds: the goal is at most 1.3). This is what macOS, FreeBSD and
# Windows builds fall back to where their file system lacks a fast path.
#
# Environment:
#   SIZE=1G        size of the raw image (half random, half zero)
#   SPARSE=64G     virtual size of the sparse image, SPARSE_DATA=32M of data in it
#   BIG=1          the convert bench's 4 GiB image (SIZE=4G SPARSE_DATA=100M)
#   REPS=3         runs per build and case (the best counts, after a warm-up)
#   DIR=…          where the images go (default: a new directory under /var/tmp)
#   KEEP=1         keep DIR afterwards
set -euo pipefail

if [[ "${BIG:-}" == 1 ]]; then
	SIZE=${SIZE:-4G} SPARSE_DATA=${SPARSE_DATA:-100M}
fi
SIZE=${SIZE:-1G}
SPARSE=${SPARSE:-64G}
SPARSE_DATA=${SPARSE_DATA:-32M}
REPS=${REPS:-3}
source "$(dirname "$0")/lib.sh"
bench_setup qimg-portable
PORTABLE=$DIR/qimg-portable
(cd "$ROOT" && CGO_ENABLED=0 go build -tags qimg_portable -o "$PORTABLE" . && CGO_ENABLED=0 go build -o "$DIR/gen" ./bench/gen)

# best BIN OUT ARGS…: REPS timed convert runs after a warm-up; sets BEST
best() {
	local bin=$1 out=$2 t
	shift 2
	BEST=
	rm -f "$out"
	"$bin" convert "$@" >/dev/null # warm-up
	for _ in $(seq "$REPS"); do
		rm -f "$out"
		sync
		t=$( { TIMEFORMAT=%R; time "$bin" convert "$@" >/dev/null; } 2>&1 )
		if [[ -z "$BEST" ]] || awk -v a="$t" -v b="$BEST" 'BEGIN { exit !(a < b) }'; then
			BEST=$t
		fi
	done
}

# run_case NAME OUT ARGS…: the same convert with both builds; the outputs
# must hold the same data
run_case() {
	local name=$1 out=$2 linux portable ratio
	shift 2
	best "$QIMG" "$out" "$@"
	linux=$BEST
	mv "$out" "$out.linux"
	best "$PORTABLE" "$out" "$@"
	portable=$BEST
	ratio=$(awk -v p="$portable" -v l="$linux" 'BEGIN { if (l <= 0) l = 0.005; printf "%.2f", p / l }')
	if ! qemu-img compare -q "$out.linux" "$out" 2>/dev/null; then
		ratio=WRONG
	fi
	printf '%-18s %9s %9s %7s  %s\n' "$name" "$linux" "$portable" "$ratio" "${*//$DIR\//}"
	rm -f "$out" "$out.linux"
}

echo "images in $DIR: SIZE=$SIZE SPARSE=$SPARSE/$SPARSE_DATA REPS=$REPS; $(nproc) CPUs"
"$DIR/gen" halfrandom "$DIR/half.raw" "$SIZE"
qemu-img convert -O qcow2 "$DIR/half.raw" "$DIR/half.qcow2"
"$DIR/gen" sparse "$DIR/sparse.raw" "$SPARSE" "$SPARSE_DATA"

printf '%-18s %9s %9s %7s  %s\n' case linux portable ratio arguments
run_case raw-to-qcow2 "$DIR/out.qcow2" -O qcow2 "$DIR/half.raw" "$DIR/out.qcow2"
run_case qcow2-to-raw "$DIR/out.raw" -O raw "$DIR/half.qcow2" "$DIR/out.raw"
run_case raw-to-raw "$DIR/out.raw" -O raw "$DIR/half.raw" "$DIR/out.raw"
run_case sparse-to-qcow2 "$DIR/out.qcow2" -O qcow2 "$DIR/sparse.raw" "$DIR/out.qcow2"
run_case raw-to-raw-none "$DIR/out.raw" -t none -T none -O raw "$DIR/half.raw" "$DIR/out.raw"
echo
echo "ratio = portable seconds / Linux seconds (best of $REPS); at most 1.3 is the goal"
