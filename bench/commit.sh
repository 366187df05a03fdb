#!/usr/bin/env bash
# bench/commit.sh: time qimg and qemu-img on the same chains, in one run,
# and print the best time of each and the ratio (qemu-img time / qimg
# time: above 1 means qimg is faster):
#
#  - commit: an overlay with PCT_COMMIT% of the image written (1 MiB of
#    every 10 by default) committed into its base (fully written), the
#    overlay emptied afterwards;
#  - rebase: a safe rebase of an overlay (10% written) from its backing
#    file onto another one that differs in PCT_REBASE% of the clusters
#    (a full copy of it with 64 KiB changed every 1.25 MiB by default);
#  - rebase onto a sibling: the same, the new backing file being an overlay
#    of the old one (where block status tells what differs without reading).
#
# Both tools write with their default cache mode (writeback, flushed at the
# end). Every run starts from fresh copies of the images it changes.
#
# Environment:
#   SIZE=1G        virtual size of the images
#   PCT_COMMIT=10  percentage of the image written in the overlay committed
#   PCT_REBASE=5   percentage of clusters where the new backing file differs
#   REPS=3         runs per tool (the best counts; a first run warms the cache)
#   DIR=…          where the images go (default: a new directory under /var/tmp)
#   QIMG=…         the qimg binary (default: built from this repository)
#   KEEP=1         keep DIR afterwards
set -euo pipefail

SIZE=${SIZE:-1G}
PCT_COMMIT=${PCT_COMMIT:-10}
PCT_REBASE=${PCT_REBASE:-5}
REPS=${REPS:-3}
source "$(dirname "$0")/lib.sh"
bench_setup qimg-bench-commit
command -v qemu-io >/dev/null || { echo "bench: qemu-io is not installed" >&2; exit 1; }

MIB=$(( $(numfmt --from=iec "$SIZE") >> 20 ))

# writes FILE PATTERN STEP_KIB LEN_KIB [START_KIB]: qemu-io writes of
# LEN_KIB every STEP_KIB from START_KIB on, in one qemu-io run
writes() {
	local file=$1 pattern=$2 step=$3 len=$4 off=${5:-0} end=$((MIB * 1024)) args=()
	while (( off + len <= end )); do
		args+=(-c "write -q -P $pattern ${off}k ${len}k")
		off=$((off + step))
	done
	if ! qemu-io "${args[@]}" "$file" >"$DIR/qemu-io.out"; then
		echo "bench: qemu-io failed on $file:" >&2
		cat "$DIR/qemu-io.out" >&2
		exit 1
	fi
}

echo "creating the images ($SIZE) in $DIR"
qemu-img create -q -f qcow2 "$DIR/base.qcow2" "$SIZE"
writes "$DIR/base.qcow2" 1 1048576 1048576 # 1 GiB at a time: qemu-io's limit is 2 GiB
if (( MIB % 1024 )); then writes "$DIR/base.qcow2" 1 1024 1024 $(( MIB / 1024 * 1048576 )); fi
# the overlay committed: 1 MiB in every 100/PCT_COMMIT MiB
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$DIR/top.qcow2"
writes "$DIR/top.qcow2" 2 $((102400 / PCT_COMMIT)) 1024
# the new backing file: a copy of base with 64 KiB changed in every
# 6400/PCT_REBASE KiB, and a sibling overlay of base with the same changes
cp "$DIR/base.qcow2" "$DIR/new.qcow2"
writes "$DIR/new.qcow2" 3 $((6400 / PCT_REBASE)) 64 512
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$DIR/sib.qcow2"
writes "$DIR/sib.qcow2" 3 $((6400 / PCT_REBASE)) 64 512
qemu-img convert -O raw "$DIR/top.qcow2" "$DIR/want.raw"

# fresh copies of what a run changes
prepare() {
	mkdir -p "$DIR/run"
	cp --reflink=auto "$DIR/base.qcow2" "$DIR/top.qcow2" "$DIR/run/"
	ln -sf ../new.qcow2 ../sib.qcow2 "$DIR/run/" 2>/dev/null || true
	# the copies on disk before the clock starts: each tool's flush then
	# writes back what it wrote, not the copies
	sync
}

# timed TOOL ARGS…: one run on fresh copies; sets ELAPSED (seconds)
timed() {
	prepare
	local start end
	start=$(date +%s.%N)
	(cd "$DIR/run" && "$@" >/dev/null)
	end=$(date +%s.%N)
	ELAPSED=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
}

# verify WHAT FILE: FILE must show the original overlay's content
verify() {
	if ! qemu-img compare -q -f qcow2 -F raw "$DIR/run/$2" "$DIR/want.raw"; then
		echo "bench: $1 left $2 with other content" >&2
		exit 1
	fi
}

best() { # best CMD…: best of REPS runs after a warm-up run
	local t
	timed "$@"
	BEST=999999
	for _ in $(seq "$REPS"); do
		timed "$@"
		t=$ELAPSED
		if awk -v a="$t" -v b="$BEST" 'BEGIN { exit !(a < b) }'; then BEST=$t; fi
	done
}

compare() { # compare NAME CHECKFILE ARGS… (run as "qemu-img ARGS" and "qimg ARGS")
	local name=$1 check=$2 q i
	shift 2
	best qemu-img "$@"
	verify "qemu-img $name" "$check"
	q=$BEST
	best "$QIMG" "$@"
	verify "qimg $name" "$check"
	i=$BEST
	awk -v n="$name" -v q="$q" -v i="$i" 'BEGIN {
		printf "%-34s qemu-img %7.3fs  qimg %7.3fs  qimg is %.2fx as fast\n", n, q, i, (i > 0) ? q / i : 0
	}'
}

compare "commit ($PCT_COMMIT% of $SIZE)" base.qcow2 commit top.qcow2
compare "rebase ($PCT_REBASE% of clusters differ)" top.qcow2 rebase -b new.qcow2 -F qcow2 top.qcow2
compare "rebase onto a sibling overlay" top.qcow2 rebase -b sib.qcow2 -F qcow2 top.qcow2
