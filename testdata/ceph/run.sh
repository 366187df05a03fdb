#!/usr/bin/env bash
# testdata/ceph/run.sh: run the S3 scripts (testdata/script/s3_*.txtar)
# against Ceph's RADOS Gateway on a one-node Ceph cluster on loopback,
# then tear the cluster down. CI runs it after the main suite.
#
# It starts one monitor, one OSD on memstore (its objects in memory,
# MEMSTORE bytes of them), pools of size 1 and no authentication between
# the daemons, then radosgw on 127.0.0.1 with a user holding the scripts'
# keys: up in 15-35 s on 2 busy cores. The scripts then run one at a time
# (TestS3Servers with QIMG_S3_REMOTE: s3serve's fault injector forwards to
# the gateway and mirrors the script's s3/ folder into its buckets, see
# s3servers_test.go), in about a minute.
#
# It needs Debian's ceph-mon, ceph-osd, radosgw and ceph-common (Ceph
# 16.2 on Debian 12), installed here with apt-get when missing (as root
# directly, otherwise through sudo), curl, Go, MEMSTORE of memory, and
# the loopback ports 6789 (monitor), 6800-7300 (OSD) and PORT free.
# Without QIMG_REQUIRE_QEMU=1, a cluster that cannot be installed or
# started skips the scripts (exit 0, said on stderr), as the Go tests
# skip what they lack; with it, that is a failure.
#
# Environment:
#   DIR=…          where the cluster lives (default: a new directory under /var/tmp)
#   MEMSTORE=2G    the OSD's room
#   PORT=7480      the gateway's port
#   KEEP=1         leave the cluster running and DIR in place
#   RUN=REGEXP     which scripts (go test -run TestS3Servers/REGEXP; default all)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MEMSTORE=${MEMSTORE:-2G}
PORT=${PORT:-7480}
DIR=${DIR:-$(mktemp -d /var/tmp/qimg-ceph.XXXXXX)}
KEY=qimgtestkey
SECRET=qimgtestsecret/do-not-print

mkdir -p "$DIR"/{run,log,mon,osd}
conf=$DIR/ceph.conf
fsid=$(cat /proc/sys/kernel/random/uuid)

teardown() {
	if [[ "${KEEP:-}" == 1 ]]; then
		echo "cluster left running: ceph -c $conf -s; DIR=$DIR" >&2
		return
	fi
	# the pids are read before any is signalled: a daemon removes its pid
	# file as it exits
	local pids=() pidfile pid
	for pidfile in "$DIR"/run/*.pid; do
		pid=$(cat "$pidfile" 2>/dev/null) && [[ -n $pid ]] && pids+=("$pid")
	done
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	done
	rm -rf "$DIR"
}
trap teardown EXIT
# a step that fails says which, with the daemons' last words
failed() {
	local status=$1 line=$2 cmd=$3
	echo "ceph/run.sh: line $line: '$cmd' failed with status $status" >&2
	tail -n 15 "$DIR"/log/*.log >&2 2>/dev/null || true
	if [[ $starting == 1 && ${QIMG_REQUIRE_QEMU:-} != 1 ]]; then
		echo "ceph/run.sh: skipped: the cluster did not start (QIMG_REQUIRE_QEMU=1 makes this a failure)" >&2
		exit 0
	fi
}
starting=1
trap 'failed $? $LINENO "$BASH_COMMAND"' ERR

# wait_until SECONDS WHAT COMMAND...: run COMMAND until it succeeds; after
# SECONDS, say which state was not reached and fail
wait_until() {
	local seconds=$1 what=$2
	shift 2
	local deadline=$((SECONDS + seconds))
	until "$@"; do
		if ((SECONDS >= deadline)); then
			echo "ceph/run.sh: $what not reached in $seconds s" >&2
			return 1
		fi
		sleep 0.2
	done
}
# ceph_cli ARGS...: the ceph command line on this cluster, its complaints
# in the log. A librados client that sends a command before the monitor's
# map reaches it sends a zero fsid, which the monitor refuses ('wrong
# fsid', EPERM), so its commands go through wait_until: all are idempotent
ceph_cli() { ceph -c "$conf" "$@" 2>>"$DIR/log/cli.log"; }
osd_up() { ceph_cli osd stat --format=json | grep -q '"num_up_osds":1,'; }
gateway_up() { curl -s -o /dev/null "http://127.0.0.1:$PORT/"; }

if ! command -v ceph-mon >/dev/null || ! command -v ceph-osd >/dev/null || ! command -v radosgw >/dev/null || ! command -v ceph >/dev/null || ! command -v curl >/dev/null; then
	if [ "$(id -u)" -eq 0 ]; then sudo=; else sudo=sudo; fi
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ceph-mon ceph-osd radosgw ceph-common curl
fi

started=$(date +%s)

cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = v1:127.0.0.1:6789
mon initial members = a
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
ms bind msgr2 = false
run dir = $DIR/run
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
keyring = $DIR/keyring
[mon]
mon data = $DIR/mon/\$name
[osd]
osd data = $DIR/osd/\$name
osd objectstore = memstore
memstore device bytes = $(numfmt --from=iec "$MEMSTORE")
osd max object name len = 460
osd max object namespace len = 64
[client.rgw.qimg]
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw data = $DIR/rgw
rgw dns name = localhost
# the tails of overwritten and deleted objects freed at once, not after
# two hours: memstore keeps them in memory (bench/s3.sh overwrites GiBs)
rgw gc obj min wait = 0
rgw gc processor period = 10
EOF
ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
monmaptool --create --addv a "[v1:127.0.0.1:6789]" --fsid "$fsid" "$DIR/monmap" >/dev/null
ceph-mon -c "$conf" -i a --mkfs --monmap "$DIR/monmap" --keyring "$DIR/keyring"
ceph-mon -c "$conf" -i a
osd_uuid=$(cat /proc/sys/kernel/random/uuid)
id=$(wait_until 60 "an id for the OSD ('ceph osd new')" ceph_cli osd new "$osd_uuid")
mkdir -p "$DIR/osd/osd.$id"
ceph-osd -c "$conf" -i "$id" --mkfs --osd-uuid "$osd_uuid" 2>>"$DIR/log/osd.mkfs.log"
# --no-mon-config: the OSD's map of the monitors then keeps the cluster's
# fsid; one fetched with the monitors' config has none until the
# monitor's map arrives, and the OSD's first commands (set-device-class,
# create-or-move) go out before then often enough that the monitor
# refuses them ('wrong fsid') and the OSD exits (status 250)
ceph-osd -c "$conf" -i "$id" --no-mon-config 2>>"$DIR/log/osd.start.log"
wait_until 120 "the OSD up" osd_up
radosgw -c "$conf" -n client.rgw.qimg
wait_until 180 "the gateway answering on 127.0.0.1:$PORT" gateway_up
radosgw-admin -c "$conf" user create --uid=qimg --display-name=qimg --access-key="$KEY" --secret-key="$SECRET" >/dev/null
echo "== Ceph RGW on 127.0.0.1:$PORT, up in $(($(date +%s) - started)) s" >&2

starting=0
cd "$ROOT"
status=0
QIMG_REQUIRE_QEMU=1 QIMG_S3_REMOTE=http://127.0.0.1:$PORT CGO_ENABLED=0 \
	go test -count=1 -parallel 1 -run "TestS3Servers/${RUN:-}" -v . >"$DIR/test.log" 2>&1 || status=$?
grep -a -E '^\s*--- |^(ok|FAIL)|FAIL:' "$DIR/test.log" || true
if [[ $status != 0 ]]; then
	cp "$DIR/test.log" "${TMPDIR:-/tmp}/qimg-ceph-test.log"
	echo "== failed; the whole output is in ${TMPDIR:-/tmp}/qimg-ceph-test.log" >&2
fi
echo "== done in $(($(date +%s) - started)) s" >&2
exit $status
