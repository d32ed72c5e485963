#!/usr/bin/env bash
# The test command (README, CI): the whole suite, then the numerically sensitive tests (marker `numeric`)
# again as if on another CPU: torch's non-vectorised kernels (ATEN_CPU_CAPABILITY=default instead of
# AVX2/AVX-512), oneDNN and MKL limited to SSE4 code paths (OpenBLAS keeps the machine's settings), and
# another thread split (torch on 2 intra-op threads instead of the suite's 1, OpenMP/MKL/BLAS on 1).
# A tolerance that only holds for one CPU's rounding fails here. Extra arguments go to the first run.
# Fails when either run fails.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

.venv/bin/python -m pytest -q "$@"
first=$?

ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2 \
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 AFFECTFLOW_TEST_THREADS=2 \
  .venv/bin/python -m pytest -q -m numeric -p no:cacheprovider
second=$?

if [ "$first" -ne 0 ] || [ "$second" -ne 0 ]; then
  echo "scripts/test.sh: suite exit $first, numeric rerun on other CPU kernels exit $second" >&2
  exit 1
fi
