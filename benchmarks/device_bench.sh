#!/usr/bin/env bash
# One call on the lent GPU: the reference WarpDrive and warpdrive, side by side, on the same machine.
#   carry: .whl (gymnasium wheels), .refbench (reference wheels + a copy of shared/bench)
#   usage: bash benchmarks/device_bench.sh [reference|env|train|check|phases|multi ...]   (default: the first four)
#   phases: each env phase as a kernel of its own (benchmarks/phase_profile.py; PHASE_ARGS, default tc_default)
#   multi: 1 vs 2 GPUs (benchmarks/multi_gpu.py; MULTI_ARGS), on a machine with 2 GPUs
# Results: JSON lines in $OUT/*.jsonl and the console.
set -u
export PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/warpdrive-numba-cache
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/refsite \
  .refbench/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(check env train reference)
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader
python3 -c "import torch, numba, numpy; print('torch', torch.__version__, 'numba', numba.__version__, 'numpy', numpy.__version__)"
for part in "${parts[@]}"; do
  echo "=== $part $(date -u +%H:%M:%S)"
  case $part in
    check) python3 benchmarks/gpu_check.py ;;
    env) python3 benchmarks/env_throughput.py ${ENV_ARGS:-} ;;
    train) python3 benchmarks/train_throughput.py ${TRAIN_ARGS:-} ;;
    phases) python3 benchmarks/phase_profile.py ${PHASE_ARGS:-tc_default} ;;
    multi) python3 benchmarks/multi_gpu.py ${MULTI_ARGS:-} ;;
    reference)  # REF_NAMES: some of the reference script's configuration names (each runs in its own process)
      if [ -z "${REF_NAMES:-}" ]; then
        (cd .refbench && PYTHONPATH=/tmp/refsite:/tmp/site python3 bench/reference_warpdrive.py)
      else
        for name in $REF_NAMES; do
          (cd .refbench && PYTHONPATH=/tmp/refsite:/tmp/site python3 bench/reference_warpdrive.py "$name")
        done
      fi ;;
  esac
done
echo "=== end $(date -u +%H:%M:%S)"
