#!/usr/bin/env bash
# bench/fuzz.sh: run every fuzz target of the repository for a given time
# each, one after another (go test runs one -fuzz target at a time).
#
#   bench/fuzz.sh                 every target, FUZZTIME each (default 20s:
#                                 cheap enough before each release)
#   FUZZTIME=30m bench/fuzz.sh    long runs, in the background
#   bench/fuzz.sh FuzzCheck ...   only the targets named (regexps, matched
#                                 against the target's name and against
#                                 PACKAGE.TARGET, e.g. 'qcow2.FuzzOpen')
#   PARALLEL=1 …                  one fuzzing worker per target (the default
#                                 is one per core): for several lanes side by
#                                 side
#
# What a target finds stays where go test puts it: a failing input in the
# package's testdata/fuzz/<target>/ (commit it with the fix, it becomes a
# regression test), the inputs that widened coverage in go's fuzz cache.
# Each target's last status line (executions, new interesting inputs) is
# printed, and the script exits non-zero if any target failed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
FUZZTIME=${FUZZTIME:-20s}
PARALLEL=${PARALLEL:-$(nproc 2>/dev/null || echo 2)}
# go test spends up to a minute minimising each new input by running it
# again and again: for targets whose runs are slow (FuzzCheck repairs on
# disk) that took most of a 30-minute run; a few seconds keeps the corpus
# small enough
MINIMIZE=${MINIMIZE:-5s}
LOG=${LOG:-$(mktemp -d /var/tmp/qimg-fuzz.XXXXXX)}

wanted() {
	local name=$1 qualified=$2
	shift 2
	[[ $# -eq 0 ]] && return 0
	for re in "$@"; do
		[[ $name =~ ^($re)$ || $qualified =~ ^($re)$ ]] && return 0
	done
	return 1
}

failed=0
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz'); do
		wanted "$target" "$(basename "$pkg").$target" "$@" || continue
		log="$LOG/$(basename "$pkg").$target.log"
		if go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$MINIMIZE" -parallel "$PARALLEL" >"$log" 2>&1; then
			status=ok
		else
			status=FAILED
			failed=1
		fi
		last=$(grep -E '^fuzz: elapsed' "$log" | tail -1)
		printf '%-7s %-40s %s\n' "$status" "${pkg#qimg/} $target" "${last:-(no progress line; see $log)}"
	done
done
echo "logs in $LOG"
exit $failed
