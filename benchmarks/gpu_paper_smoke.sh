#!/usr/bin/env bash
# The paper tier's whole code path on one GPU, on data anyone can make: the `paper` profile
# (WRN38 DeepWV3PlusTH, 512 px crops, batch 12, the TPAMI flow, joint flow update, bf16
# autocast) pointed at the SynthCity trees, from random weights (NVIDIA's checkpoint cannot be
# downloaded everywhere). It checks that every stage runs on CUDA and times it; the numbers it
# prints are speeds, not accuracies (a few hundred steps from random weights learn little).
#
#   bash benchmarks/gpu_paper_smoke.sh [LOG_DIR]
#   (environment: PYTHON=python3 STEPS=200 FLOW_STEPS=200 BENCH=1; BENCH=0 skips the step benchmark)
#
# Every stage runs even when one before it failed, so one run reports them all; the exit
# status is that of the first failure. Logs go to LOG_DIR (default runs/gpu-smoke/logs).
set -u
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-200}
FLOW_STEPS=${FLOW_STEPS:-200}
RUN=${RUN_DIR:-runs/gpu-smoke}
LOGS=${1:-$RUN/logs}
EXTRA=${EXTRA:-}
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1

P="--profile paper --set use_synthcity=true --set runs_dir=$RUN --set figures_dir=$RUN/figures
   --set cityscapes_root={synthcity_root}/cityscapes
   --set ade20k_root={synthcity_root}/ade20k/ADEChallengeData2016
   --set fishyscapes_root={synthcity_root}/fishyscapes
   --set init_checkpoint=none --set train_steps=$STEPS --set flow_pretrain_steps=$FLOW_STEPS
   --set checkpoint_every=100000 --set flow_checkpoint_every=100000 $EXTRA"

status=0
stage() {  # stage NAME COMMAND...: run, time, log; remember the first failure
    local name=$1; shift
    local start=$SECONDS
    "$@" > "$LOGS/$name.log" 2>&1
    local rc=$?
    echo "stage $name: exit $rc, $((SECONDS - start)) s"
    tail -n 4 "$LOGS/$name.log" | tr '\r' '\n' | tail -n 4 | sed 's/^/    /'
    if [ $rc -ne 0 ] && [ $status -eq 0 ]; then status=$rc; fi
}

stage env "$PYTHON" -c "import torch; print(torch.__version__, torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"
[ "${BENCH:-1}" = 1 ] && stage step_benchmark "$PYTHON" benchmarks/gpu_paper_tier.py --steps 10 --batch 8
[ "${BENCH:-1}" = 1 ] && stage flow_sample_benchmark "$PYTHON" benchmarks/bench_flow_samples.py --reps 10
stage make_data "$PYTHON" -m dhlib make-data --profile quick
# shellcheck disable=SC2086
stage train_flow "$PYTHON" -m dhlib train-flow $P
# shellcheck disable=SC2086
stage train "$PYTHON" -m dhlib train $P
# shellcheck disable=SC2086
stage evaluate "$PYTHON" -m dhlib evaluate $P --checkpoint "$RUN/model.pt"
exit $status
