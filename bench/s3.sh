#!/usr/bin/env bash
# bench/s3.sh: time qimg converting to and from an S3 server on loopback
# against the same convert to and from a local file, and curl moving the
# same raw bytes (one PUT, one GET), in one run; print the times and the
# ratios (reference time / qimg's: above 1 qimg is faster).
#
# The server is versitygw (posix backend in DIR, as the tests run it;
# ./test.sh installs it), or with SERVER=gofakes3 bench/s3serve (the
# tests' own server), which bounds what is measured: it reads each part
# into memory, hashes it twice under one lock, and copies the parts into
# the file when the upload completes, where curl's single PUT streams into
# the file. versitygw writes parts in parallel and joins them with
# copy_file_range.
#
# The source is the issue's case: half its blocks data (gen halfrandom),
# as raw and as qcow2.
#
# Environment:
#   SIZE=1G        size of the image (the issue's case is 4G)
#   REPS=3         runs per case (the best counts; a first run warms the cache)
#   SERVER=versitygw  or gofakes3
#   FS=xfs         put the bucket on an XFS loop mount (root only): versitygw joins
#                  the parts of an upload by reflink there; on ext4 it copies them
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
mkdir -p "$DIR/s3/bench"
cp "$DIR/src.raw" "$DIR/src.qcow2" "$DIR/s3/bench/"

KEY=bench SECRET=bench/secret
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
*)
	echo "bench: SERVER is versitygw or gofakes3" >&2
	exit 1
	;;
esac
export AWS_ENDPOINT_URL=$url AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

local_out() { rm -f "$DIR/out.raw"; "$@"; }
curl_put() {
	curl -sf --aws-sigv4 aws:amz:us-east-1:s3 --user "$KEY:$SECRET" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
		-T "$DIR/src.raw" "$url/bench/curl.raw" >/dev/null
}
curl_get() {
	curl -sf --aws-sigv4 aws:amz:us-east-1:s3 --user "$KEY:$SECRET" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \
		-o "$DIR/out.raw" "$url/bench/src.raw"
}

row() { printf '| %s | %s | %s s | %s s | %s |\n' "$1" "$2" "$3" "$4" "$(ratio "$3" "$4")"; }
printf '| case (%s, %s) | reference | reference time | qimg | ratio |\n| --- | --- | --- | --- | --- |\n' "$SIZE" "$SERVER${FS:+ on $FS}"

# uploads: raw and qcow2 sources into a raw object
q=$(best "$QIMG" convert -f raw -O raw "$DIR/src.raw" s3://bench/up.raw)
cmp "$DIR/src.raw" "$DIR/s3/bench/up.raw"
l=$(best local_out "$QIMG" convert -f raw -O raw "$DIR/src.raw" "$DIR/out.raw")
row "raw → s3 raw" "qimg → local file" "$l" "$q"
if command -v curl >/dev/null; then
	c=$(best curl_put)
	row "raw → s3 raw" "curl PUT" "$c" "$q"
fi
q=$(best "$QIMG" convert -f qcow2 -O raw "$DIR/src.qcow2" s3://bench/up.raw)
l=$(best local_out "$QIMG" convert -f qcow2 -O raw "$DIR/src.qcow2" "$DIR/out.raw")
row "qcow2 → s3 raw" "qimg → local file" "$l" "$q"

# downloads: raw and qcow2 objects into a local raw file
q=$(best local_out "$QIMG" convert -f raw -O raw s3://bench/src.raw "$DIR/out.raw")
cmp "$DIR/src.raw" "$DIR/out.raw"
l=$(best local_out "$QIMG" convert -f raw -O raw "$DIR/src.raw" "$DIR/out.raw")
row "s3 raw → raw" "qimg from local file" "$l" "$q"
if command -v curl >/dev/null; then
	c=$(best local_out curl_get)
	row "s3 raw → raw" "curl GET" "$c" "$q"
fi
q=$(best local_out "$QIMG" convert -f qcow2 -O raw s3://bench/src.qcow2 "$DIR/out.raw")
l=$(best local_out "$QIMG" convert -f qcow2 -O raw "$DIR/src.qcow2" "$DIR/out.raw")
row "s3 qcow2 → raw" "qimg from local file" "$l" "$q"
