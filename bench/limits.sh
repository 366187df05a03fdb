#!/usr/bin/env bash
# bench/limits.sh: how much address space qimg and qemu-img need, measured
# as the smallest `prlimit --as` under which each command still succeeds
# (found by bisection to 1 MiB), the limit OpenStack nova sets being 1 GiB.
# A Go binary reserves about 690 MiB of address space at start (the
# runtime's page-allocator summaries, never backed by memory), so that is
# the floor; what a command needs above it is its own.
#
# Environment:
#   DIR=…     where the images go (default: a new directory under /var/tmp)
#   QIMG=…    the qimg binary (default: built from this repository, static)
#   KEEP=1    keep DIR afterwards
set -euo pipefail
source "$(dirname "$0")/lib.sh"
bench_setup qimg-bench-limits
command -v prlimit >/dev/null || { echo "bench: prlimit (util-linux) is not installed" >&2; exit 1; }

# needed CMD…: the smallest address-space limit, in MiB, under which CMD
# exits 0 (each try starts from a removed target, see run_convert).
needed() {
	local lo=0 hi=$((4096 << 20)) mid
	prlimit --as=$hi "$@" >/dev/null 2>&1 || { echo "fails"; return; }
	while ((hi - lo > 1 << 20)); do
		mid=$(((lo + hi) / 2))
		if prlimit --as=$mid "$@" >/dev/null 2>&1; then hi=$mid; else lo=$mid; fi
	done
	echo $((hi >> 20))
}

# run_convert TOOL ARGS… TARGET: removes TARGET, then execs the conversion
# (exec keeps the shell out of the measured process).
run_convert() { rm -f "${@: -1}"; exec "$@"; }
export -f run_convert

head -c $((32 << 20)) /dev/urandom >"$DIR/disk.raw"
truncate -s 64M "$DIR/disk.raw"
qemu-img convert -f raw -O qcow2 "$DIR/disk.raw" "$DIR/disk.qcow2"

printf '| command | qemu-img | qimg |\n| --- | --- | --- |\n'
row() {
	local name=$1
	shift
	printf '| %s | %s MiB | %s MiB |\n' "$name" \
		"$(needed "${@/#TOOL/qemu-img}")" "$(needed "${@/#TOOL/$QIMG}")"
}
row 'info --force-share --output=json (64 MiB qcow2)' TOOL info --force-share --output=json "$DIR/disk.qcow2"
row 'convert -m 16 -O raw' bash -c 'run_convert "$0" convert -m 16 -O raw "$1" "$2"' TOOL "$DIR/disk.qcow2" "$DIR/out.raw"
row 'convert -m 16 -c -O qcow2' bash -c 'run_convert "$0" convert -m 16 -c -O qcow2 "$1" "$2"' TOOL "$DIR/disk.raw" "$DIR/out.qcow2"
