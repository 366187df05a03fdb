#!/bin/sh
# Runs qimg's whole test suite. The CLI scripts compare qimg with the real
# qemu-img, qemu-io and qemu-nbd, and use nbdkit as a second NBD server: when
# they are missing, qemu-utils and nbdkit are installed from Debian/Ubuntu
# first (with sudo unless running as root). The S3 scripts run against
# versitygw as well as the tests' own server: it is built into Go's bin
# folder (go install) unless that version is there already.
set -e
cd "$(dirname "$0")"
if ! command -v qemu-img >/dev/null 2>&1 || ! command -v qemu-io >/dev/null 2>&1 || ! command -v nbdkit >/dev/null 2>&1; then
	if [ "$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-utils nbdkit
fi

versitygw_version=v1.8.0
gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin=$(go env GOPATH)/bin
PATH=$gobin:$PATH
export PATH
# has_versitygw: the versitygw on PATH is the module at that version
has_versitygw() {
	v=$(command -v versitygw 2>/dev/null) || return 1
	go version -m "$v" 2>/dev/null | grep -q "^[[:space:]]*mod[[:space:]]*github.com/versity/versitygw[[:space:]]*$versitygw_version[[:space:]]"
}
if ! has_versitygw; then
	if ! log=$(GOFLAGS= go install "github.com/versity/versitygw/cmd/versitygw@$versitygw_version" 2>&1); then
		echo "$log" >&2
		exit 1
	fi
fi

# The scripts run qimg from the test binary: static, as the README builds it.
export CGO_ENABLED=0
# a loaded machine runs the CLI scripts far slower than the default 10 minutes allow
exec go test -timeout 30m "$@" ./...
