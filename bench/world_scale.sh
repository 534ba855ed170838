#!/bin/bash
# World-scale sensitivity of a trained quickstart run (bench/results/quickstart_experiments.md):
# export the held-out rooms in moved worlds, evaluate the run on each with model.scene_scale off
# and on, print PSNR / SSIM.
#
#   bash bench/world_scale.sh RUN SPREAD [OUT]      e.g. bash bench/world_scale.sh runs/quickstart 0.127
#
# SPREAD is the normalised context-camera spread (0.127: the median of the training rooms).
set -euo pipefail
run=$1; spread=$2; out=${3:-$run/world_scale}
scenetok=${SCENETOK:-scenetok}
mkdir -p "$out"
log=$out/log.txt   # the commands' own messages (swap notes, skipped index entries); errors too
trap 'echo "failed; see $log" >&2' ERR
index=$run/eval/index.json
[ -f "$index" ] || $scenetok eval "$run" --no-progress > /dev/null 2>> "$log"
for moved in "1 0 0 0" "4 2 -1 3" "0.25 -3 1 2"; do
  set -- $moved
  data=$out/data_s$1
  [ -d "$data" ] || $scenetok data export quickstart --out "$data" --scale "$1" --offset "$2" "$3" "$4" \
      --max-scenes 48 --no-progress > /dev/null 2>> "$log"
  for value in 0 "$spread"; do
    $scenetok eval "$run" --no-progress --index "$index" --out "$out/eval_s$1_scale$value" \
        dataset.name=transforms dataset.root="$data" model.scene_scale="$value" > /dev/null 2>> "$log"
    python3 -c "import json,sys; m=json.load(open(sys.argv[1]))['methods']
print('scale %-5s scene_scale=%-6s model %.2f / %.3f   nearest context %.2f / %.3f' % (sys.argv[2], sys.argv[3],
      m['model']['mean']['psnr'], m['model']['mean']['ssim'],
      m['nearest_context']['mean']['psnr'], m['nearest_context']['mean']['ssim']))" \
        "$out/eval_s$1_scale$value/eval.json" "$1" "$value"
  done
done
