#!/usr/bin/env bash
# bench/s3.sh: time qimg converting to and from an S3 server on loopback
# against curl moving the same raw bytes (one PUT, one GET) to and from
# the same server, in one run; print the times and the ratios (curl's
# time / qimg's: above 1 qimg is faster).
#
# Page-cache-heavy runs are noisy on a loaded or virtual machine (fresh
# page cache can cost a fault on the host per page), so the two tools
# take turns (curl, qimg, curl, qimg…), each case is run REPS times, and
# the table gives the best and the median wall time, and beside them the
# CPU seconds (user + system) of the client and of the server, which
# vary far less, and the load average when the case ended.
#
# The server is versitygw (posix backend in DIR, as the tests run it;
# ./test.sh installs it), or with SERVER=gofakes3 bench/s3serve (the
# tests' own server), which bounds what is measured: it reads each part
# into memory, hashes it twice under one lock, and copies the parts into
# the file when the upload completes, where curl's single PUT streams into
# the file. versitygw writes each part to a file of its own and joins
# them when the upload completes: on ext4 by copying them, on XFS
# (FS=xfs) by reflink.
#
# The source is the issue's case: half its blocks data (gen halfrandom).
# Uploads: the raw image into a raw object, and into a qcow2 object
# (against curl's PUT of the raw bytes: the issue's goal is 1.25x at
# most); downloads: a raw and a qcow2 object into a local raw file.
#
# Environment:
#   SIZE=1G        size of the image (the issue's case is 4G)
#   REPS=3         runs of each tool per case
#   ONLY=upload    only the uploads (or ONLY=download)
#   SERVER=versitygw  or gofakes3, or remote: a running server at
#                  ENDPOINT with the keys KEY and SECRET (Ceph RGW from
#                  KEEP=1 testdata/ceph/run.sh: a gateway that joins the
#                  parts of an upload in its index, copying nothing);
#                  the bucket "bench" is made there and the sources sent
#                  up with curl
#   FS=xfs         put the bucket on an XFS loop mount (root only)
#   DIR=…          where the images and the bucket go (default: a new directory under /var/tmp)
#   QIMG=…         the qimg binary (default: built from this repository)
#   KEEP=1         keep DIR afterwards
set -euo pipefail
SIZE=${SIZE:-1G}
REPS=${REPS:-3}
source "$(dirname "$0")/lib.sh"
bench_setup qimg-bench-s3
SERVER=${SERVER:-versitygw}
(cd "$ROOT" && CGO_ENABLED=0 go build -o "$DIR/gen" ./bench/gen && CGO_ENABLED=0 go build -o "$DIR/s3serve" ./bench/s3serve)
"$DIR/gen" halfrandom "$DIR/src.raw" "$SIZE"
qemu-img convert -f raw -O qcow2 "$DIR/src.raw" "$DIR/src.qcow2"
mkdir -p "$DIR/s3"
cleanup() {
	if [[ -n "${srv_pid:-}" ]]; then kill "$srv_pid" 2>/dev/null; wait "$srv_pid" 2>/dev/null || true; fi
	if [[ "${KEEP:-}" == 1 ]]; then return; fi
	if mountpoint -q "$DIR/s3"; then umount "$DIR/s3"; fi
	rm -rf "$DIR"
}
trap cleanup EXIT
if [[ "${FS:-}" == xfs ]]; then
	# the bucket on XFS, where versitygw joins the parts of an upload by
	# reflink rather than copying them (as on ext4)
	truncate -s $(($(numfmt --from=iec "$SIZE") * 6)) "$DIR/s3.xfs"
	mkfs.xfs -q "$DIR/s3.xfs"
	mount -o loop "$DIR/s3.xfs" "$DIR/s3"
fi
KEY=${KEY:-bench} SECRET=${SECRET:-bench/secret}
if [[ $SERVER != remote ]]; then
	mkdir -p "$DIR/s3/bench"
	cp "$DIR/src.raw" "$DIR/src.qcow2" "$DIR/s3/bench/"
fi
case $SERVER in
versitygw)
	vgw=$(command -v versitygw || echo "$(go env GOPATH)/bin/versitygw")
	[[ -x "$vgw" ]] || { echo "bench: versitygw is not installed (./test.sh installs it)" >&2; exit 1; }
	port=$((20000 + RANDOM % 20000))
	ROOT_ACCESS_KEY=$KEY ROOT_SECRET_KEY=$SECRET "$vgw" --port "127.0.0.1:$port" --quiet posix "$DIR/s3" >"$DIR/server.log" 2>&1 &
	srv_pid=$!
	url=http://127.0.0.1:$port
	for _ in $(seq 300); do curl -s -o /dev/null "$url" && break; sleep 0.1; done
	;;
gofakes3)
	"$DIR/s3serve" "$DIR/s3" >"$DIR/url" &
	srv_pid=$!
	for _ in $(seq 100); do [[ -s "$DIR/url" ]] && break; sleep 0.1; done
	url=$(cat "$DIR/url")
	;;
remote)
	url=${ENDPOINT:?bench: SERVER=remote needs ENDPOINT}
	# a Ceph cluster on this machine: its gateway's and OSDs' CPU
	srv_pids=$(pgrep -x 'radosgw|ceph-osd' | tr '\n' ' ' || true)
	;;
*)
	echo "bench: SERVER is versitygw, gofakes3 or remote" >&2
	exit 1
	;;
esac
srv_pids=${srv_pids-$srv_pid}
export AWS_ENDPOINT_URL=$url AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

# s3curl ARGS…: curl signing as the bench's user
s3curl() {
	curl -sf --aws-sigv4 aws:amz:us-east-1:s3 --user "$KEY:$SECRET" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$@"
}
curl_put() { s3curl -T "$DIR/src.raw" "$url/bench/curl.raw" >/dev/null; }
if [[ $SERVER == remote ]]; then
	s3curl -X PUT "$url/bench" >/dev/null || true # there already, or made now
	s3curl -T "$DIR/src.raw" "$url/bench/src.raw" >/dev/null
	s3curl -T "$DIR/src.qcow2" "$url/bench/src.qcow2" >/dev/null
fi
# same OBJECT FILE: the object in the bucket holds the same image as FILE
same() {
	if [[ $SERVER == remote ]]; then
		"$QIMG" compare -q "$2" "s3://bench/$1"
	else
		qemu-img compare -q "$2" "$DIR/s3/bench/$1"
	fi
}
curl_get() { s3curl -o "$DIR/out.raw" "$url/bench/src.raw"; }

# cpu_of PID…: user + system seconds of the processes so far (0 for none)
cpu_of() {
	local pid sum=0
	for pid in "$@"; do
		sum=$(awk -v t="$(getconf CLK_TCK)" -v s="$sum" '{ printf "%.2f", s + ($14 + $15) / t }' "/proc/$pid/stat")
	done
	echo "$sum"
}

# run CMD…: one timed run (after removing the local output, and after a
# sync, so that no run pays for the writeback of the one before it: a
# 4 GiB upload leaves gigabytes dirty, and the kernel throttles the next
# writer once they pass its dirty limit); prints "wall client-cpu
# server-cpu", the client's from bash's times of its children
run() {
	local s0 s1 t0 t1 c0 c1
	rm -f "$DIR/out.raw"
	sync
	s0=$(cpu_of $srv_pids)
	times >"$DIR/times"
	c0=$(child_cpu)
	t0=$(date +%s.%N)
	"$@" >/dev/null
	t1=$(date +%s.%N)
	times >"$DIR/times"
	c1=$(child_cpu)
	s1=$(cpu_of $srv_pids)
	awk -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v s0="$s0" -v s1="$s1" \
		'BEGIN { printf "%.2f %.2f %.2f\n", t1 - t0, c1 - c0, s1 - s0 }'
}

# child_cpu: user + system seconds of this shell's finished children, as
# times wrote them (in this shell, not in a command substitution's)
child_cpu() {
	awk 'NR == 2 { split($1, u, "m"); split($2, s, "m"); printf "%.3f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$DIR/times"
}

# stats FILE: best and median wall, median client and server CPU of the runs in FILE
stats() {
	sort -n "$1" | awk '{ w[NR] = $1; c[NR] = $2; s[NR] = $3 }
		END { m = int((NR + 1) / 2); printf "%.2f %.2f %.2f %.2f\n", w[1], w[m], c[m], s[m] }'
}

# pair CASE REFERENCE REF-FUNC -- QIMG-CMD…: REPS runs of each, taking turns
pair() {
	local name=$1 refname=$2 ref=$3
	shift 4
	: >"$DIR/ref.runs"
	: >"$DIR/qimg.runs"
	for _ in $(seq "$REPS"); do
		run "$ref" >>"$DIR/ref.runs"
		run "$@" >>"$DIR/qimg.runs"
	done
	read -r rb rm rc rs < <(stats "$DIR/ref.runs")
	read -r qb qm qc qs < <(stats "$DIR/qimg.runs")
	printf '| %s | %s | %s / %s s | %s / %s s | %s / %s | %s + %s s | %s + %s s | %s |\n' "$name" "$refname" \
		"$rb" "$rm" "$qb" "$qm" "$(ratio "$rb" "$qb")" "$(ratio "$rm" "$qm")" "$rc" "$rs" "$qc" "$qs" \
		"$(cut -d' ' -f1 /proc/loadavg)"
}

printf '| case (%s, %s) | reference | reference best / median | qimg best / median | ratio best / median | CPU reference + server | CPU qimg + server | load |\n' \
	"$SIZE" "$SERVER${FS:+ on $FS}"
printf '| --- | --- | --- | --- | --- | --- | --- | --- |\n'

if [[ "${ONLY:-upload}" == upload ]]; then
	pair "raw → s3 raw" "curl PUT" curl_put -- "$QIMG" convert -f raw -O raw "$DIR/src.raw" s3://bench/up.raw
	same up.raw "$DIR/src.raw"
	pair "raw → s3 qcow2" "curl PUT (raw)" curl_put -- "$QIMG" convert -f raw -O qcow2 "$DIR/src.raw" s3://bench/up.qcow2
	same up.qcow2 "$DIR/src.raw"
fi
if [[ "${ONLY:-download}" == download ]]; then
	pair "s3 raw → raw" "curl GET" curl_get -- "$QIMG" convert -f raw -O raw s3://bench/src.raw "$DIR/out.raw"
	cmp "$DIR/src.raw" "$DIR/out.raw"
	pair "s3 qcow2 → raw" "curl GET (raw)" curl_get -- "$QIMG" convert -f qcow2 -O raw s3://bench/src.qcow2 "$DIR/out.raw"
	cmp "$DIR/src.raw" "$DIR/out.raw"
fi
