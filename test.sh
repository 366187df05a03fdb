#!/bin/sh
# Runs qimg's whole test suite. The CLI scripts compare qimg with the real
# qemu-img, qemu-io and qemu-nbd, and use nbdkit as a second NBD server: when
# they are missing, qemu-utils and nbdkit are installed from Debian/Ubuntu
# first (with sudo unless running as root).
set -e
cd "$(dirname "$0")"
if ! command -v qemu-img >/dev/null 2>&1 || ! command -v qemu-io >/dev/null 2>&1 || ! command -v nbdkit >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-utils nbdkit
fi
# The scripts run qimg from the test binary: static, as the README builds it.
export CGO_ENABLED=0
exec go test "$@" ./...
