#!/usr/bin/env bash
# bench/luks.sh: time qimg and qemu-img converting a raw image into LUKS
# (aes-256-xts-plain64, qemu's default), a LUKS image back to raw, and a
# qcow2 image with encrypt.format=luks back to raw, in one run, and print
# per case the best time of each and the ratio (qemu-img time / qimg time:
# above 1 means qimg is faster).
#
# Both tools time PBKDF2 for about a second when they create the LUKS
# header (iter-time=10 keeps the derivation itself short); the rest is the
# sector encryption. LUKS to raw needs --image-opts to give the key; a qimg
# without it skips that case.
#
# Environment:
#   SIZE=1G        size of the raw image (random data)
#   REPS=3         runs per tool and case (the best counts)
#   DIR=…          where the images go (default: a new directory under /var/tmp)
#   QIMG=…         the qimg binary (default: built from this repository)
#   KEEP=1         keep DIR afterwards
set -euo pipefail

SIZE=${SIZE:-1G}
REPS=${REPS:-3}
source "$(dirname "$0")/lib.sh"
bench_setup qimg-bench-luks

SECRET=(--object secret,id=sec0,data=bench-passphrase)
SRC=$DIR/src.raw
echo "writing $SIZE of random data in $DIR"
head -c "$(numfmt --from=iec "$SIZE")" /dev/urandom >"$SRC"

# best CMD…: the best elapsed time of REPS runs, in seconds; a run that
# qemu-img 7.2 fails with its flaky PBKDF2 timing ("Unable to get accurate
# CPU usage") is run again
best() {
	local b="" i t0 t1 t tries
	for ((i = 0; i < REPS; i++)); do
		rm -f "$DIR/out.luks" "$DIR/out.raw"
		for ((tries = 0; ; tries++)); do
			t0=$(date +%s.%N)
			if "$@" 2>"$DIR/err"; then
				break
			fi
			if ! grep -q 'Unable to get accurate CPU usage' "$DIR/err" || ((tries > 20)); then
				echo "bench: $* failed:" >&2
				cat "$DIR/err" >&2
				exit 1
			fi
			rm -f "$DIR/out.luks"
		done
		t1=$(date +%s.%N)
		t=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
		if [[ -z "$b" ]] || awk -v t="$t" -v b="$b" 'BEGIN { exit !(t < b) }'; then
			b=$t
		fi
	done
	echo "$b"
}

report() {
	local name=$1 q=$2 i=$3
	printf '%-18s qemu-img %8.3fs   qimg %8.3fs   ratio %5.2f\n' "$name" "$q" "$i" \
		"$(awk -v q="$q" -v i="$i" 'BEGIN { printf "%.2f", q / i }')"
}

TO_LUKS=(convert "${SECRET[@]}" -O luks -o key-secret=sec0,iter-time=10 "$SRC" "$DIR/out.luks")
q=$(best qemu-img "${TO_LUKS[@]}")
i=$(best "$QIMG" "${TO_LUKS[@]}")
report "raw -> luks" "$q" "$i"

LUKS=$DIR/in.luks
qemu-img "${TO_LUKS[@]/$DIR\/out.luks/$LUKS}" 2>/dev/null || "$QIMG" "${TO_LUKS[@]/$DIR\/out.luks/$LUKS}"
FROM_LUKS=(convert "${SECRET[@]}" --image-opts -O raw "driver=luks,key-secret=sec0,file.filename=$LUKS" "$DIR/out.raw")
q=$(best qemu-img "${FROM_LUKS[@]}")
if "$QIMG" "${FROM_LUKS[@]}" 2>/dev/null; then
	i=$(best "$QIMG" "${FROM_LUKS[@]}")
	report "luks -> raw" "$q" "$i"
	cmp "$SRC" "$DIR/out.raw"
else
	printf '%-18s qemu-img %8.3fs   qimg: skipped (no --image-opts)\n' "luks -> raw" "$q"
fi

QCOW2=$DIR/in.qcow2
TO_QCOW2=(convert "${SECRET[@]}" -O qcow2 -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 "$SRC" "$QCOW2")
until qemu-img "${TO_QCOW2[@]}" 2>"$DIR/err"; do
	grep -q 'Unable to get accurate CPU usage' "$DIR/err" || { cat "$DIR/err" >&2; exit 1; }
done
FROM_QCOW2=(convert "${SECRET[@]}" --image-opts -O raw "driver=qcow2,encrypt.key-secret=sec0,file.filename=$QCOW2" "$DIR/out.raw")
q=$(best qemu-img "${FROM_QCOW2[@]}")
i=$(best "$QIMG" "${FROM_QCOW2[@]}")
report "qcow2-luks -> raw" "$q" "$i"
cmp "$SRC" "$DIR/out.raw"
