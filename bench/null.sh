#!/usr/bin/env bash
# bench/null.sh: the block layer's own cost per request. qemu-img bench and
# qimg bench on null-co:// (reads return at once, writes go nowhere), the
# same requests for both, in one run; prints the best time of each, the
# requests per second and the ratio (qemu-img time / qimg time: above 1
# means qimg is faster).
#
# Environment:
#   COUNT=100000   requests per run
#   DEPTH=64       requests in flight
#   REPS=5         runs per tool and case (the best counts)
#   QIMG=…         the qimg binary (default: built from this repository)
set -euo pipefail

COUNT=${COUNT:-100000}
DEPTH=${DEPTH:-64}
REPS=${REPS:-5}
source "$(dirname "$0")/lib.sh"
bench_setup qimg-bench-null

# best TOOL ARGS…: the best "Run completed in" time of REPS runs
best() {
	local t b=""
	for _ in $(seq "$REPS"); do
		t=$("$@" 2>/dev/null | sed -n 's/^Run completed in \([0-9.]*\) seconds\.$/\1/p')
		if [[ -z $b ]] || awk -v a="$t" -v b="$b" 'BEGIN { exit !(a < b) }'; then
			b=$t
		fi
	done
	echo "$b"
}

printf '%-28s %10s %10s %12s %12s %7s\n' case qemu-img qimg 'qemu-img/s' 'qimg/s' ratio
for mode in read write; do
	flag=()
	[[ $mode == write ]] && flag=(-w)
	args=(bench "${flag[@]}" -c "$COUNT" -d "$DEPTH" -f raw null-co://)
	q=$(best qemu-img "${args[@]}")
	m=$(best "$QIMG" "${args[@]}")
	awk -v c="$mode 4k x$COUNT depth $DEPTH" -v q="$q" -v m="$m" -v n="$COUNT" 'BEGIN {
		qs = q > 0 ? n / q : 0; ms = m > 0 ? n / m : 0
		printf "%-28s %9.3fs %9.3fs %12.0f %12.0f %7.2f\n", c, q, m, qs, ms, (m > 0 ? q / m : 0) }'
done
