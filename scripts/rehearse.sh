#!/usr/bin/env bash
# make rehearse: the whole paper profile on stand-in weights (random, real architectures, real cache
# layouts), one short clip, a few DDIM steps, through every `vst` step. Outputs live under
# $REHEARSE_DIR (default .rehearse/, git-ignored); every table says STAND-IN WEIGHTS. Not in CI.
# Sizes are the paper's (frames at short side 512, DiffuseST at 512, losses at 256; the vendored
# clips are 256x256, so they are upsampled and stay square): about 10 min with OMP_NUM_THREADS=2 on
# 2 CPU cores (prepare 203 s, most of it RAFT-large at 512; baseline 155 s; train 70 s; evaluate
# 98 s; stylize 95 s). Add `--set data.size=256 --set backbone.resolution=256` to SET for a quicker one.
set -euo pipefail
PY=${PYTHON:-python}
DIR=$(mkdir -p "${REHEARSE_DIR:-.rehearse}" && cd "${REHEARSE_DIR:-.rehearse}" && pwd)
W="$DIR/weights"
[ -f "$W/stand-in.json" ] || $PY -m vstlib.cli stand-in-weights --profile paper --scale tiny "$W"
export HF_HOME="$W/huggingface" HF_HUB_CACHE="$W/huggingface/hub" TORCH_HOME="$W/torch" HF_HUB_OFFLINE=1
export VSTLIB_HOME="$DIR/home"
mkdir -p "$VSTLIB_HOME/videos"
cp vstlib/assets/clips/wolf.mp4 vstlib/assets/clips/woman-running.mp4 "$VSTLIB_HOME/videos/"
STYLE="$PWD/vstlib/assets/styles/starry_night.jpg"
SET=(--profile paper --set data.n_clips=2 --set data.n_frames=4 --set data.motion_threshold=0.0
     --set backbone.num_inference_steps=3 --set backbone.num_inversion_steps=3 --set train.epochs=1)
step() { local t0=$SECONDS; echo "== vst $*"; $PY -m vstlib.cli "$@"; echo "== $1: $((SECONDS - t0)) s" | tee -a "$DIR/times.txt"; }
: > "$DIR/times.txt"
step prepare "${SET[@]}" --videos "$VSTLIB_HOME/videos" --style "$STYLE"
step baseline "${SET[@]}"
step train "${SET[@]}"
step evaluate "${SET[@]}"
step stylize "${SET[@]}" --video "$VSTLIB_HOME/videos/wolf.mp4" --style "$STYLE" --max-frames 4 \
     --policy "$VSTLIB_HOME/results/paper/runs/main/policy.safetensors" --out "$DIR/wolf_stylized.mp4" || \
step stylize "${SET[@]}" --video "$VSTLIB_HOME/videos/wolf.mp4" --style "$STYLE" --max-frames 4 --out "$DIR/wolf_stylized.mp4"
grep -l "STAND-IN" "$VSTLIB_HOME"/results/paper/*.csv >/dev/null || { echo "tables lack the STAND-IN marker" >&2; exit 1; }
cat "$DIR/times.txt"
