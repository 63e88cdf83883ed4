#!/bin/sh
# tests/fuzz/run.sh - build the libFuzzer targets with clang and fuzz each one
# for a while (docs/FUZZING.md).
#
#   sh tests/fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 60); TARGETs among resp cmd money rates
# accounts journal (default all).  Targets run FUZZ_PARALLEL at a time
# (default 2), each on a copy of its corpus (tests/fuzz/corpus/TARGET): what
# libFuzzer adds goes to the scratch directory, never to the repo.  Exits 1
# when any target crashes, leaks, times out or fails a property, printing the
# input that did it and how to keep it as a regression input.
#
# Environment: FUZZ_BUILD (build directory, default build-fuzz), FUZZ_OUT
# (scratch directory; default FUZZ_BUILD/fuzz-out, emptied first; one given
# here is kept, so its corpus grows from night to night), FUZZ_PARALLEL,
# FUZZ_ARGS (more libFuzzer flags, e.g. "-jobs=4 -workers=4").
set -eu
cd "$(dirname "$0")/../.."

all="resp cmd money rates accounts journal"
seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-$all}
build=${FUZZ_BUILD:-build-fuzz}
parallel=${FUZZ_PARALLEL:-2}
extra=${FUZZ_ARGS:-}

case $seconds in
'' | *[!0-9]*)
	echo "usage: sh tests/fuzz/run.sh [SECONDS] [TARGET...]  (targets: $all)" >&2
	exit 2
	;;
esac
for t in $targets; do
	case " $all " in
	*" $t "*) ;;
	*)
		echo "run.sh: unknown target '$t' (targets: $all)" >&2
		exit 2
		;;
	esac
done
if ! command -v clang >/dev/null 2>&1; then
	echo "run.sh: needs clang and libFuzzer: apt-get install clang libclang-rt-14-dev" >&2
	exit 1
fi

# Configure once; the flags are fixed by the option, so a reconfigure is never needed.
if [ ! -f "$build/build.ninja" ]; then
	# TG_WERROR=true (tools/quickstart test): warnings are errors.
	CC=clang meson setup "$build" -Dfuzz=true -Db_sanitize=address,undefined \
		-Db_lundef=false -Dwerror="${TG_WERROR:-false}" >/dev/null
fi
# Only the fuzz targets: the rest of the tree is built and tested by gcc.
ninja -C "$build" $(for t in $targets; do printf 'tests/fuzz/fuzz_%s ' "$t"; done) >/dev/null

if [ -n "${FUZZ_OUT:-}" ]; then
	out=$FUZZ_OUT
else
	out=$build/fuzz-out
	rm -rf "$out"
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
top=$(pwd)

# The targets' temporary files (journal segments, rate files): in memory when possible.
tmpbase=/tmp
[ -d /dev/shm ] && [ -w /dev/shm ] && tmpbase=/dev/shm
scratch=$(mktemp -d "$tmpbase/tg-fuzz-run-XXXXXX")
trap 'rm -rf "$scratch"' EXIT
trap 'exit 130' INT TERM

symbolizer=""
for s in /usr/lib/llvm-14/bin/llvm-symbolizer /usr/bin/llvm-symbolizer; do
	[ -x "$s" ] && symbolizer=$s && break
done

# run_one TARGET: fuzz it; its log and exit status go to $out/TARGET/.
run_one() {
	t=$1
	dir=$out/$t
	mkdir -p "$dir/corpus" "$dir/artifacts" "$dir/work" "$scratch/$t"
	cp "$top/tests/fuzz/corpus/$t/"* "$dir/corpus/" 2>/dev/null || true
	dict=""
	[ -f "$top/tests/fuzz/$t.dict" ] && dict="-dict=$top/tests/fuzz/$t.dict"
	rc=0
	# -jobs writes fuzz-N.log into the working directory: give each target its own.
	# shellcheck disable=SC2086
	(cd "$dir/work" && TMPDIR="$scratch/$t" ASAN_SYMBOLIZER_PATH=$symbolizer \
		ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		"$top/$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 \
		-rss_limit_mb=2048 -max_len=8192 -print_final_stats=1 \
		-artifact_prefix="$dir/artifacts/" $dict $extra "$dir/corpus") \
		>"$dir/log" 2>&1 || rc=$?
	echo "$rc" >"$dir/rc"
}

echo "run.sh: fuzzing $targets for ${seconds}s each, $parallel at a time (output in $out)"
set -- $targets
while [ $# -gt 0 ]; do
	pids=""
	n=0
	while [ $# -gt 0 ] && [ "$n" -lt "$parallel" ]; do
		run_one "$1" &
		pids="$pids $!"
		n=$((n + 1))
		shift
	done
	for p in $pids; do
		wait "$p" || true
	done
done

# A line per target: what libFuzzer reached; then every failure in full.
failed=""
printf '%-9s %-6s %12s %9s %7s %8s %7s\n' target result execs exec/s cov features corpus
for t in $targets; do
	dir=$out/$t
	rc=$(cat "$dir/rc" 2>/dev/null || echo 1)
	final() { sed -n "s/^stat::$1: *//p" "$dir/log" | tail -n 1; }
	last=$(grep -E '^#[0-9]+' "$dir/log" | tail -n 1)
	cov=$(echo "$last" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
	ft=$(echo "$last" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
	result=ok
	[ "$rc" = 0 ] || result=FAILED
	printf '%-9s %-6s %12s %9s %7s %8s %7s\n' "$t" "$result" "$(final number_of_executed_units)" \
		"$(final average_exec_per_sec)" "${cov:--}" "${ft:--}" \
		"$(find "$dir/corpus" -type f | wc -l)"
	[ "$rc" = 0 ] || failed="$failed $t"
done

for t in $failed; do
	dir=$out/$t
	echo
	echo "==== $t failed; the end of its log ($dir/log):"
	tail -n 40 "$dir/log"
	for f in "$dir"/artifacts/crash-* "$dir"/artifacts/leak-* "$dir"/artifacts/timeout-* \
		"$dir"/artifacts/oom-*; do
		[ -f "$f" ] || continue
		echo "---- input: $f"
		echo "     reproduce: $build/tests/fuzz/fuzz_$t $f"
		echo "     once fixed, keep it as a regression input (replayed by 'meson test'):"
		echo "       cp $f tests/fuzz/corpus/$t/"
	done
done
[ -z "$failed" ] || {
	echo
	echo "run.sh: failed:$failed" >&2
	exit 1
}
echo "run.sh: no crash in $targets"
