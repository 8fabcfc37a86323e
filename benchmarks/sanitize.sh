#!/usr/bin/env bash
# compute-sanitizer over benchmarks/sanitize.py on a GPU machine: each tool over the workload (the env, sampler
# and return-scan kernels, all named launch_*) must report no error; each planted bug must be reported by its tool.
#   usage: bash benchmarks/sanitize.sh [ENV ...]     logs in $OUT (default /tmp)
# PyTorch's caching allocator is off: memcheck sees allocations as the driver made them, so a write past a tensor
# lands outside its allocation instead of inside a cached block (where memcheck cannot tell it from a valid one).
set -u
out=${OUT:-/tmp}
failed=0
export PYTORCH_NO_CUDA_MEMORY_CACHING=1
report() {  # tool, what, exit status, expected status, log
  echo "$1 on $2: exit $3 (expected $4); $(grep -a -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$5")"
  if [ "$3" -ne "$4" ]; then failed=1; digest "$5"; fi
}
digest() {  # each reported error's kind and kernel, after which workload line (the size that ran before it)
  awk '/ envs x |return scans/ {after = $0}
       /^========= [A-Z]/ && !/SUMMARY|COMPUTE-SANITIZER/ {kind = $0; sub(/^========= /, "", kind); sub(/ at 0x.*/, "", kind); want = 1; next}
       want && /^=========     at / {frame = $3; sub(/\+0x.*/, "", frame); print "  after [" after "] " kind " in " substr(frame, 1, 90); want = 0}
       /Target application returned an error|Error: / {print "  " $0}' "$1" | sort | uniq -c | sort -rn | head -n 30
  tail -n 4 "$1"
}
# memcheck, racecheck and synccheck look at warpdrive's kernels only (all named launch_*). initcheck watches every
# kernel, since a filtered one would not see PyTorch's kernels initialise the tensors that ours then read. Errors
# returned by CUDA API calls are not reported: cuda-bindings probes the driver for entry points it may lack.
for tool in memcheck racecheck synccheck initcheck; do
  filter=(--kernel-name kns=launch_)
  [ "$tool" = initcheck ] && filter=()
  compute-sanitizer --tool "$tool" --error-exitcode 9 --report-api-errors no "${filter[@]}" \
    python3 benchmarks/sanitize.py run "$@" > "$out/sanitize_$tool.log" 2>&1
  report "$tool" workload $? 0 "$out/sanitize_$tool.log"
done
for planted in "racecheck planted-race" "memcheck planted-out-of-bounds"; do
  set -- $planted
  compute-sanitizer --tool "$1" --error-exitcode 9 python3 benchmarks/sanitize.py "$2" > "$out/sanitize_$2.log" 2>&1
  report "$1" "$2" $? 9 "$out/sanitize_$2.log"
done
exit $failed
