#!/usr/bin/env bash
# bench/check.sh: time qimg check and qemu-img check on the same qcow2 image,
# in one run, and print the best time of each, the ratio (qemu-img time /
# qimg time: above 1 means qimg is faster), the CPU time and the peak RSS.
#
# The image is the issue's case: a 1 TiB qcow2 with preallocation=metadata
# and 64 KiB clusters (16.8 million allocated clusters; the file is sparse,
# about 160 MiB on disk). qemu-img creates it.
#
# Environment:
#   SIZE=1T        virtual size of the image
#   CLUSTER=64k    cluster size
#   REPS=3         runs per tool (the best counts; a first run warms the cache)
#   DIR=…          where the image goes (default: a new directory under /var/tmp)
#   QIMG=…         the qimg binary (default: built from this repository)
#   KEEP=1         keep DIR afterwards
set -euo pipefail

SIZE=${SIZE:-1T}
CLUSTER=${CLUSTER:-64k}
REPS=${REPS:-3}
source "$(dirname "$0")/lib.sh"
bench_setup qimg-bench-check

# measure CMD…: runs it once, sets ELAPSED and CPU (seconds) and RSS (KiB)
measure() {
	local out=$DIR/time.out rc=0
	if [[ -x /usr/bin/time ]]; then
		/usr/bin/time -f '%e %U %S %M' -o "$out" "$@" >"$DIR/out" 2>"$DIR/err" || rc=$?
		local u s
		read -r ELAPSED u s RSS <"$out"
		CPU=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
	else
		# no GNU time: elapsed from date, peak RSS polled from /proc
		local start end pid hwm=0 v
		start=$(date +%s.%N)
		"$@" >"$DIR/out" 2>"$DIR/err" &
		pid=$!
		while kill -0 "$pid" 2>/dev/null; do
			v=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
			if [[ -n "$v" && "$v" -gt "$hwm" ]]; then hwm=$v; fi
			sleep 0.01
		done
		wait "$pid" || rc=$?
		end=$(date +%s.%N)
		ELAPSED=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
		CPU=-
		RSS=$hwm
	fi
	if [[ $rc != 0 ]]; then
		echo "bench: $* failed (exit $rc):" >&2
		cat "$DIR/err" >&2
		exit 1
	fi
}

IMG=$DIR/check.qcow2
echo "creating $SIZE qcow2, preallocation=metadata, cluster_size=$CLUSTER in $DIR"
qemu-img create -q -f qcow2 -o "preallocation=metadata,cluster_size=$CLUSTER" "$IMG" "$SIZE"

# the two must agree before their times mean anything
qemu-img check --output=json "$IMG" >"$DIR/qemu.json"
"$QIMG" check --output=json "$IMG" >"$DIR/qimg.json"
if ! cmp -s "$DIR/qemu.json" "$DIR/qimg.json"; then
	echo "bench: qimg check and qemu-img check disagree:" >&2
	diff "$DIR/qemu.json" "$DIR/qimg.json" >&2 || true
	exit 1
fi

best() { # best NAME CMD…: best of REPS runs after a warm-up run
	local name=$1 t c r
	shift
	measure "$@"
	BEST=999999 BEST_CPU=0 BEST_RSS=0
	for _ in $(seq "$REPS"); do
		measure "$@"
		t=$ELAPSED c=$CPU r=$RSS
		if awk -v a="$t" -v b="$BEST" 'BEGIN { exit !(a < b) }'; then
			BEST=$t BEST_CPU=$c BEST_RSS=$r
		fi
	done
	printf '%-10s %8ss  cpu %6ss  peak RSS %7d KiB\n' "$name" "$BEST" "$BEST_CPU" "$BEST_RSS"
}

best qemu-img qemu-img check "$IMG"
Q=$BEST Q_RSS=$BEST_RSS
best qimg "$QIMG" check "$IMG"
I=$BEST I_RSS=$BEST_RSS
awk -v q="$Q" -v i="$I" -v qr="$Q_RSS" -v ir="$I_RSS" 'BEGIN {
	r = (i > 0) ? q / i : 0
	printf "check %s: qimg is %.2fx as fast as qemu-img; peak RSS %d KiB vs %d KiB\n", "'"$SIZE"'", r, ir, qr
}'
