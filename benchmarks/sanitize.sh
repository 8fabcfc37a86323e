#!/usr/bin/env bash
# compute-sanitizer over benchmarks/sanitize.py on a GPU machine: each tool over the workload (the env, sampler
# and return-scan kernels, all named launch_*) must report no error; each planted bug must be reported by its tool.
#   usage: bash benchmarks/sanitize.sh [ENV ...]     logs in $OUT (default /tmp)
set -u
out=${OUT:-/tmp}
failed=0
for tool in memcheck racecheck synccheck initcheck; do
  compute-sanitizer --tool "$tool" --error-exitcode 9 --kernel-name regex:launch_ \
    python3 benchmarks/sanitize.py run "$@" > "$out/sanitize_$tool.log" 2>&1
  rc=$?
  echo "$tool over the workload: exit $rc; $(grep -m1 'ERROR SUMMARY' "$out/sanitize_$tool.log")"
  [ $rc -eq 0 ] || failed=1
done
for planted in "racecheck planted-race" "memcheck planted-out-of-bounds"; do
  set -- $planted
  compute-sanitizer --tool "$1" --error-exitcode 9 python3 benchmarks/sanitize.py "$2" > "$out/sanitize_$2.log" 2>&1
  rc=$?
  echo "$1 on $2: exit $rc (9 expected: reported); $(grep -m1 'ERROR SUMMARY' "$out/sanitize_$2.log")"
  [ $rc -eq 9 ] || failed=1
done
exit $failed
