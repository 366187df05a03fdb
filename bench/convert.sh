#!/usr/bin/env bash
# bench/convert.sh: time qimg convert and qemu-img convert on the same files,
# in one run, and print per case the best time of each, the ratio
# (qemu-img time / qimg time: above 1 means qimg is faster) and the peak RSS.
#
# Environment:
#   SIZE=512M      size of the raw images (random/zero halves, chain layers)
#   TEXT=64M       size of the compressible text for -c
#   SPARSE=64G     virtual size of the sparse image, SPARSE_DATA=32M of data in it
#   BIG=1          the issue's sizes: SIZE=4G TEXT=512M SPARSE_DATA=100M
#   REPS=3         runs per tool and case (the best counts; a first run warms the cache)
#   DIR=…          where the images go (default: a new directory under /var/tmp)
#   QIMG=…         the qimg binary (default: built from this repository)
#   KEEP=1         keep DIR afterwards
#   CASES="…"      run only these cases (names as printed)
#
# The VHD cases are the Azure pipeline's fixed,force_size conversion and a
# dynamic one, the VHDX cases a dynamic and a fixed Hyper-V disk and the
# way back to raw (issue 12).

set -euo pipefail

if [[ "${BIG:-}" == 1 ]]; then
	SIZE=${SIZE:-4G} TEXT=${TEXT:-512M} SPARSE_DATA=${SPARSE_DATA:-100M}
fi
SIZE=${SIZE:-512M}
TEXT=${TEXT:-64M}
SPARSE=${SPARSE:-64G}
SPARSE_DATA=${SPARSE_DATA:-32M}
REPS=${REPS:-3}
source "$(dirname "$0")/lib.sh"
bench_setup qimg-bench
(cd "$ROOT" && CGO_ENABLED=0 go build -o "$DIR/gen" ./bench/gen)
GEN=$DIR/gen

# measure CMD…: runs it once, sets ELAPSED (seconds) and RSS (KiB)
measure() {
	local out=$DIR/time.out
	if [[ -x /usr/bin/time ]]; then
		if ! /usr/bin/time -f '%e %M' -o "$out" "$@" >/dev/null 2>"$DIR/err.out"; then
			ELAPSED=fail RSS=0
			return
		fi
		read -r ELAPSED RSS <"$out"
		return
	fi
	# no GNU time: elapsed from date, peak RSS polled from /proc
	local start end pid hwm=0 v
	start=$(date +%s.%N)
	"$@" >/dev/null 2>"$DIR/err.out" &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		v=$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
		if [[ -n "$v" && "$v" -gt "$hwm" ]]; then hwm=$v; fi
		sleep 0.02
	done
	if ! wait "$pid"; then
		ELAPSED=fail RSS=0
		return
	fi
	end=$(date +%s.%N)
	ELAPSED=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')
	RSS=$hwm
}

# best TOOL OUT ARGS…: REPS timed runs after a warm-up; sets BEST and PEAK
best() {
	local tool=$1 out=$2
	shift 2
	BEST= PEAK=0
	rm -f "$out"
	"$tool" "$@" >/dev/null 2>&1 || true # warm-up
	for _ in $(seq "$REPS"); do
		rm -f "$out"
		sync
		measure "$tool" "$@"
		if [[ "$ELAPSED" == fail ]]; then
			BEST=fail
			echo "  $(basename "$tool") failed: $(head -c 300 "$DIR/err.out")" >&2
			return
		fi
		if [[ -z "$BEST" ]] || awk -v a="$ELAPSED" -v b="$BEST" 'BEGIN { exit !(a < b) }'; then
			BEST=$ELAPSED
		fi
		if ((RSS > PEAK)); then PEAK=$RSS; fi
	done
}

ROWS=()
row() { ROWS+=("$(printf '%-22s %9s %9s %7s %10s %10s  %s' "$@")"); echo "${ROWS[-1]}"; }

wanted() { [[ -z "${CASES:-}" || " $CASES " == *" $1 "* ]]; }

# case NAME OUT ARGS…: the same command line for both tools
run_case() {
	local name=$1 out=$2
	shift 2
	wanted "$name" || return 0
	best qemu-img "$out" convert "$@"
	local qb=$BEST qp=$PEAK
	best "$QIMG" "$out" convert "$@"
	local ib=$BEST ip=$PEAK
	local ratio=-
	if [[ "$qb" != fail && "$ib" != fail ]]; then
		ratio=$(awk -v q="$qb" -v i="$ib" 'BEGIN { if (i <= 0) i = 0.005; printf "%.2f", q / i }')
		# the result must be right, or the time means nothing
		local src=${*: -2:1}
		# the output's format named (-O), as a fixed VHD probes as raw
		local fmt=raw i j
		for ((i = 1; i < $#; i++)); do
			if [[ "${!i}" == -O ]]; then j=$((i + 1)) fmt=${!j}; fi
		done
		if ! qemu-img compare -q -F "$fmt" "$src" "$out" 2>/dev/null; then
			ratio="WRONG"
		fi
	fi
	local args="$*"
	row "$name" "$qb" "$ib" "$ratio" "$((qp / 1024))MiB" "$((ip / 1024))MiB" "${args//$DIR\//}"
	rm -f "$out"
}

echo "images in $DIR: SIZE=$SIZE TEXT=$TEXT SPARSE=$SPARSE/$SPARSE_DATA REPS=$REPS; $(nproc) CPUs"
echo "qemu-img: $(qemu-img --version | head -1)"
echo "qimg:     $("$QIMG" --version | head -1)"

echo "building images…"
"$GEN" halfrandom "$DIR/half.raw" "$SIZE"
qemu-img convert -O qcow2 "$DIR/half.raw" "$DIR/half.qcow2"
qemu-img convert -f raw -O vhdx "$DIR/half.raw" "$DIR/half.vhdx"
"$GEN" text "$DIR/text.raw" "$TEXT"
"$GEN" sparse "$DIR/sparse.raw" "$SPARSE" "$SPARSE_DATA"
# a 3-deep chain: base with data everywhere, two overlays writing 10% of
# the clusters each (64 KiB clusters, a fixed random choice)
qemu-img convert -O qcow2 "$DIR/half.raw" "$DIR/base.qcow2"
overlay() {
	qemu-img create -q -f qcow2 -b "$(basename "$2")" -F qcow2 "$1"
	awk -v n="$(($(qemu-img info --output=json "$2" | awk -F'[:,]' '/"virtual-size"/ { print $2 }') / 65536))" -v seed="$3" \
		'BEGIN { srand(seed); for (i = 0; i < n / 10; i++) printf "write -q -P %d %d 64k\n", (i % 250) + 1, int(rand() * n) * 65536 }' |
		qemu-io "$1" >/dev/null
}
overlay "$DIR/mid.qcow2" "$DIR/base.qcow2" 1
overlay "$DIR/top.qcow2" "$DIR/mid.qcow2" 2

echo
printf '%-22s %9s %9s %7s %10s %10s  %s\n' case qemu-img qimg ratio "RSS qemu" "RSS qimg" "arguments"
if wanted cp; then
	rm -f "$DIR/cp.raw"
	sync
	measure cp --sparse=always "$DIR/half.raw" "$DIR/cp.raw"
	row "cp-sparse(reference)" "$ELAPSED" - - "$((RSS / 1024))MiB" - "cp --sparse=always half.raw cp.raw"
	rm -f "$DIR/cp.raw"
fi
run_case raw-to-qcow2 "$DIR/out.qcow2" -O qcow2 "$DIR/half.raw" "$DIR/out.qcow2"
run_case qcow2-to-raw "$DIR/out.raw" -O raw "$DIR/half.qcow2" "$DIR/out.raw"
run_case compress-zlib "$DIR/out.qcow2" -c -O qcow2 "$DIR/text.raw" "$DIR/out.qcow2"
run_case compress-zstd "$DIR/out.qcow2" -c -O qcow2 -o compression_type=zstd "$DIR/text.raw" "$DIR/out.qcow2"
run_case sparse-to-qcow2 "$DIR/out.qcow2" -O qcow2 "$DIR/sparse.raw" "$DIR/out.qcow2"
run_case chain3-flatten "$DIR/out.qcow2" -O qcow2 "$DIR/top.qcow2" "$DIR/out.qcow2"
run_case m16-W "$DIR/out.qcow2" -m 16 -W -O qcow2 "$DIR/half.raw" "$DIR/out.qcow2"
run_case writeback "$DIR/out.qcow2" -t writeback -O qcow2 "$DIR/half.raw" "$DIR/out.qcow2"
run_case raw-to-raw "$DIR/out.raw" -O raw "$DIR/half.raw" "$DIR/out.raw"
run_case raw-to-vhd-fixed "$DIR/out.vhd" -f raw -O vpc -o subformat=fixed,force_size "$DIR/half.raw" "$DIR/out.vhd"
run_case raw-to-vhd-dynamic "$DIR/out.vhd" -f raw -O vpc "$DIR/half.raw" "$DIR/out.vhd"
run_case raw-to-vhdx-dynamic "$DIR/out.vhdx" -f raw -O vhdx "$DIR/half.raw" "$DIR/out.vhdx"
run_case raw-to-vhdx-fixed "$DIR/out.vhdx" -f raw -O vhdx -o subformat=fixed "$DIR/half.raw" "$DIR/out.vhdx"
run_case vhdx-to-raw "$DIR/out.raw" -O raw "$DIR/half.vhdx" "$DIR/out.raw"

echo
echo "ratio = qemu-img seconds / qimg seconds (best of $REPS); RSS = peak resident set size"
