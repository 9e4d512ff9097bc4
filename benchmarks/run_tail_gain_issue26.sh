#!/usr/bin/env bash
# Issue 26 at MNIST-LT rho=1000, the issue-17 protocol (5 paired seeds, resnet8 4 epochs, top-up 500, filtered,
# weight 1, + RandAugment):
#   - the rows before issue 26 (square-root-balanced CBDM, --augment 0.12, 1200 steps; gate, no real floor)
#     against the real floor alone (floor0.5) and `cbdm-aug run`'s default arm, NEW, which tail_gain.py builds
#     from the settings classes (GeneratorSettings, CacheSettings, ArmSettings); when it was run, NEW was
#     cbdm-sqrt-a12-1200:w1:gate:floor0.5:evidence (the real floor and the cross-fitted per-class evidence);
#   - first the 3-image row (n_max 3000: 3000 ... 13, 6, 3 images), then n_max 5000 (... 10, 5 images).
# Results go to new tags (*_issue26), so the committed rows before it stay as they are. Resumable.
#   bash benchmarks/run_tail_gain_issue26.sh
set -euo pipefail
cd "$(dirname "$0")/.."
L="python benchmarks/_ladder.py"
eval "$(python benchmarks/tail_gain.py --print-default)"  # DEFAULT_ARM, DEFAULT_GEN, DEFAULT_GEN_STEPS, DEFAULT_GEN_OPTS
OLD=cbdm-sqrt-a12-1200:w1:gate
NEW=$DEFAULT_ARM
for ROW in n3000 n5000; do
  if [ $ROW = n3000 ]; then NMAX=3000; G=runs/rho1000_n3000/gens; W=runs/tail_gain_rho1000_n3000; else NMAX=5000; G=runs/rho1000/gens; W=runs/tail_gain_rho1000; fi
  python benchmarks/tail_gain.py --imbalance 1000 --max-per-class $NMAX --jobs 1 --gen-runs $G --work $W \
    --arms real-cb,real-ra,$OLD,$OLD:floor0.5,$NEW --default-arm $NEW --compare-gens "" \
    --tag tail_gain_rho1000_${ROW}_issue26 &
  ARMS_PID=$!
  $L cbdm-sqrt-a12 --imbalance 1000 --max-per-class $NMAX --tau 1 --budgets 1200 --balance-power 0.5 --augment 0.12 --work $G
  # shellcheck disable=SC2086 - DEFAULT_GEN_OPTS is a list of options
  $L $DEFAULT_GEN --imbalance 1000 --max-per-class $NMAX --budgets $DEFAULT_GEN_STEPS $DEFAULT_GEN_OPTS --work $G
  wait $ARMS_PID
done

# CIFAR-10-LT rho=100 from the JPEG copy (not run yet: it did not fit the session that wrote it). 16x16 RGB, + horizontal flips; no class under 20 images, so few-shot is
# the two rarest (83, 50: --few-below 100); the help that should stay. The generators: OLD's and the default's.
S=${SCRATCH:-${TMPDIR:-/tmp}/cbdm-scratch}
[ -d "$S/cifar10/train" ] || { mkdir -p "$S"; tar xzf ../shared/datasets/cifar10-jpeg.tar.gz -C "$S"; }
mkdir -p runs/tail_gain_cifar10
python -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; from tail_gain import folder_pair_npz; folder_pair_npz(Path('$S/cifar10'), Path('runs/tail_gain_cifar10/data.npz'))"
python benchmarks/tail_gain.py --data runs/tail_gain_cifar10/data.npz --dataset-name cifar10-jpeg --hflip --imbalance 100 \
  --few-below 100 --jobs 1 --gen-runs runs/cifar10/gens --work runs/tail_gain_cifar10 \
  --arms real-cb,real-ra,$OLD,$NEW --default-arm $NEW --compare-gens "" --tag tail_gain_cifar10_issue26 &
ARMS_PID=$!
$L cbdm-sqrt-a12 --data runs/tail_gain_cifar10/data.npz --imbalance 100 --tau 1 --budgets 1200 --balance-power 0.5 \
   --augment 0.12 --work runs/cifar10/gens
# shellcheck disable=SC2086
$L $DEFAULT_GEN --data runs/tail_gain_cifar10/data.npz --imbalance 100 --budgets $DEFAULT_GEN_STEPS $DEFAULT_GEN_OPTS \
   --work runs/cifar10/gens
wait $ARMS_PID
