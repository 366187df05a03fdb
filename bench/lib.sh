# bench/lib.sh: what the benchmark scripts share. Source it after
# `set -euo pipefail`; bench_setup NAME sets ROOT, DIR (a new folder under
# /var/tmp unless DIR is set, removed at exit unless KEEP=1) and QIMG (built
# from this repository unless QIMG is set), and checks that qemu-img is
# installed.

bench_setup() {
	ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	DIR=${DIR:-$(mktemp -d "/var/tmp/$1.XXXXXX")}
	mkdir -p "$DIR"
	trap 'if [[ "${KEEP:-}" != 1 ]]; then rm -rf "$DIR"; fi' EXIT
	command -v qemu-img >/dev/null || { echo "bench: qemu-img is not installed" >&2; exit 1; }
	if [[ -z "${QIMG:-}" ]]; then
		QIMG=$DIR/qimg
		(cd "$ROOT" && CGO_ENABLED=0 go build -o "$QIMG" .)
	fi
}
