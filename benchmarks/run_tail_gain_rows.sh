#!/usr/bin/env bash
# Issue 17's second row and its natural-image check, with the primary regime's default arm
# (cbdm-sqrt-1200:w1 = CBDM on square-root-balanced batches, 1200 steps, filtered, weight 1, + RandAugment):
#   - MNIST-LT rho=100 (n_max 5000: 5000 ... 83, 50 images): no class has < 20 images, so few-shot is
#     the two classes under 100 (--few-below 100); with the DDPM and DDPM-balanced pipelines;
#   - CIFAR-10-LT rho=100 from the JPEG copy (16x16 RGB, + horizontal flips), 5 seeds, CBDM only.
# Resumable: rerun it and every finished generator, cache and classifier seed is reused.
#   bash benchmarks/run_tail_gain_rows.sh [SCRATCH]     (SCRATCH/cifar10 is unpacked there; default $TMPDIR/cbdm-scratch)
set -euo pipefail
cd "$(dirname "$0")/.."
S=${1:-${TMPDIR:-/tmp}/cbdm-scratch}
[ -d "$S/cifar10/train" ] || { mkdir -p "$S"; tar xzf ../shared/datasets/cifar10-jpeg.tar.gz -C "$S"; }
L="python benchmarks/_ladder.py"
# generators (benchmarks/_ladder.py: cpu UNet, 16x16, batch 64, lr 1e-3)
$L cbdm-sqrt --imbalance 100 --tau 1 --budgets 1200 --balance-power 0.5 --work runs/rho100/gens
mkdir -p runs/tail_gain_cifar10
python -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; from tail_gain import folder_pair_npz; folder_pair_npz(Path('$S/cifar10'), Path('runs/tail_gain_cifar10/data.npz'))"
$L cbdm-sqrt --data runs/tail_gain_cifar10/data.npz --imbalance 100 --tau 1 --budgets 1200 --balance-power 0.5 \
   --work runs/cifar10/gens
$L ddpm --imbalance 100 --tau 0 --budgets 1200 --work runs/rho100/gens
$L ddpm-bal --imbalance 100 --tau 0 --budgets 1200 --balance-power 0 --work runs/rho100/gens
