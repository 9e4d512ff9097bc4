#!/usr/bin/env bash
# Issue 26 at MNIST-LT rho=1000, the issue-17 protocol (5 paired seeds, resnet8 4 epochs, top-up 500, filtered,
# weight 1, + RandAugment), on the default generator (square-root-balanced CBDM, --augment 0.12, 1200 steps):
#   - the rows before issue 26 (gate, no real floor) against the real floor alone (floor0.5) and the new default
#     (the real floor and the cross-fitted per-class evidence, floor0.5:evidence);
#   - first the 3-image row (n_max 3000: 3000 ... 13, 6, 3 images), then n_max 5000 (... 10, 5 images).
# Results go to new tags (*_issue26), so the committed rows before it stay as they are. Resumable.
#   bash benchmarks/run_tail_gain_issue26.sh
set -euo pipefail
cd "$(dirname "$0")/.."
L="python benchmarks/_ladder.py"
OLD=cbdm-sqrt-a12-1200:w1:gate
NEW=$OLD:floor0.5:evidence
for ROW in n3000 n5000; do
  if [ $ROW = n3000 ]; then NMAX=3000; G=runs/rho1000_n3000/gens; W=runs/tail_gain_rho1000_n3000; else NMAX=5000; G=runs/rho1000/gens; W=runs/tail_gain_rho1000; fi
  python benchmarks/tail_gain.py --imbalance 1000 --max-per-class $NMAX --jobs 1 --gen-runs $G --work $W \
    --arms real-cb,real-ra,$OLD,$OLD:floor0.5,$NEW --default-arm $NEW --compare-gens "" \
    --tag tail_gain_rho1000_${ROW}_issue26 &
  ARMS_PID=$!
  $L cbdm-sqrt-a12 --imbalance 1000 --max-per-class $NMAX --tau 1 --budgets 1200 --balance-power 0.5 --augment 0.12 --work $G
  wait $ARMS_PID
done
