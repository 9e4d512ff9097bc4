#!/usr/bin/env bash
# The classifier arms of benchmarks/run_tail_gain_rows.sh (run it alongside or after; an arm whose generator
# snapshot is not there yet waits for it). ARGS go to both tail_gain.py calls (e.g. --jobs 1).
# Its --default-arm is issue 17's default, kept so that a rerun gives its results files; today's is
# `python benchmarks/tail_gain.py --print-default`.
set -euo pipefail
cd "$(dirname "$0")/.."
T="python benchmarks/tail_gain.py --arms real-cb,real-ra,real-bs,real-la,oracle --default-arm cbdm-sqrt-1200:w1"
$T --imbalance 100 --few-below 100 --compare-gens ddpm,ddpm-bal --eval-gens cbdm-sqrt-1200,ddpm-1200,ddpm-bal-1200 "$@"
$T --imbalance 100 --few-below 100 --data runs/tail_gain_cifar10/data.npz --dataset-name cifar10-jpeg --hflip \
   --gen-runs runs/cifar10/gens --work runs/tail_gain_cifar10 --tag tail_gain_cifar10 --compare-gens "" \
   --eval-gens cbdm-sqrt-1200 "$@"
