# bench/lib.sh: what the benchmark scripts share. Source it after
# `set -euo pipefail`; bench_setup NAME sets ROOT, DIR (a new folder under
# /var/tmp unless DIR is set, removed at exit unless KEEP=1) and QIMG (built
# from this repository unless QIMG is set), and checks that qemu-img is
# installed. best and ratio time commands and compare the times.

bench_setup() {
	ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	DIR=${DIR:-$(mktemp -d "/var/tmp/$1.XXXXXX")}
	mkdir -p "$DIR"
	trap 'if [[ "${KEEP:-}" != 1 ]]; then rm -rf "$DIR"; fi' EXIT
	command -v qemu-img >/dev/null || { echo "bench: qemu-img is not installed" >&2; exit 1; }
	reporting_notice
	if [[ -z "${QIMG:-}" ]]; then
		QIMG=$DIR/qimg
		(cd "$ROOT" && CGO_ENABLED=0 go build -o "$QIMG" .)
	fi
}

# best CMD…: the best elapsed seconds of REPS runs of CMD after a warm-up
best() {
	local b= start end t
	"$@" >/dev/null
	for _ in $(seq "$REPS"); do
		start=$(date +%s.%N)
		"$@" >/dev/null
		end=$(date +%s.%N)
		t=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f", e - s }')
		if [[ -z "$b" ]] || awk -v t="$t" -v b="$b" 'BEGIN { exit !(t < b) }'; then b=$t; fi
	done
	echo "$b"
}

# ratio A B: A / B with two decimals
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# reporting_notice warns when the kernel hands free memory back to a
# hypervisor (virtio-balloon free page reporting): there a page the guest
# touches again costs a fault on the host, and copies that fill gigabytes
# of new page cache measure the host more than the tool (the same `dd` of
# 4 GiB took 1 to 19 s, and which tool gets recycled pages varies run to
# run). Setting the order above the largest block stops the reporting for
# the bench (as root: echo 11 > …/page_reporting_order; 9 is the default).
reporting_notice() {
	local order=/sys/module/page_reporting/parameters/page_reporting_order
	[[ -r $order ]] || return 0
	(($(cat "$order") <= 10)) || return 0
	echo "bench: free page reporting is on ($order): page-cache-heavy times vary with the host" >&2
}
