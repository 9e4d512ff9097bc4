#!/usr/bin/env bash
# Issue 21 at MNIST-LT rho=1000 (n_max 5000: 5000 ... 10, 5 images; few-shot = the 10- and 5-image classes),
# the issue-17 protocol (5 paired seeds, resnet8 4 epochs, top-up 500, filtered, weight 1, + RandAugment):
#   - augmentation conditioning (CBDM+ADA, fit-generator --augment P): P = 0, 0.12 (the reference's) and 0.3,
#     on the square-root-balanced CBDM of issue 17's default arm, at 1200 and 2400 steps;
#   - the same pipeline with a plain DDPM (tau 0) at P = 0 and 0.12;
#   - the per-class gate (filter-cache --max-copy-share 0.5) on and off;
#   - the generator side per budget (near-copy share, recall, recognised share of the 5/10/23-image classes).
# Its --default-arm is the default of its time (issue 21), kept so that a rerun gives its results file; today's
# is `python benchmarks/tail_gain.py --print-default`. Generators are fitted in the order that decides most
# first; tail_gain.py trains each arm as soon as its snapshot exists. Resumable: rerun it and every finished generator, cache and classifier seed is reused.
#   bash benchmarks/run_tail_gain_ada.sh
set -euo pipefail
cd "$(dirname "$0")/.."
L="python benchmarks/_ladder.py"
G=runs/rho1000/gens
ARMS=real-cb,real-ra,oracle,cbdm-sqrt-1200:w1,cbdm-sqrt-a12-1200:w1,cbdm-sqrt-a12-1200:w1:gate,cbdm-sqrt-2400:w1
ARMS=$ARMS,cbdm-sqrt-a12-2400:w1,cbdm-sqrt-a30-1200:w1,ddpm-sqrt-1200:w1,ddpm-sqrt-a12-1200:w1
EVAL=cbdm-sqrt-1200,cbdm-sqrt-a12-1200,cbdm-sqrt-2400,cbdm-sqrt-a12-2400,cbdm-sqrt-a30-1200,ddpm-sqrt-1200,ddpm-sqrt-a12-1200
python benchmarks/tail_gain.py --imbalance 1000 --synthetic-weight 1 --jobs 1 --arms "$ARMS" --eval-gens "$EVAL" \
  --default-arm "${DEFAULT_ARM:-cbdm-sqrt-a12-1200:w1:gate}" --compare-gens ddpm-sqrt-a12 --tag tail_gain_rho1000 &
ARMS_PID=$!
$L cbdm-sqrt     --imbalance 1000 --tau 1 --budgets 1200,2400 --balance-power 0.5 --work $G
$L cbdm-sqrt-a12 --imbalance 1000 --tau 1 --budgets 1200,2400 --balance-power 0.5 --augment 0.12 --work $G
$L cbdm-sqrt-a30 --imbalance 1000 --tau 1 --budgets 1200 --balance-power 0.5 --augment 0.3 --work $G
$L ddpm-sqrt     --imbalance 1000 --tau 0 --budgets 1200 --balance-power 0.5 --work $G
$L ddpm-sqrt-a12 --imbalance 1000 --tau 0 --budgets 1200 --balance-power 0.5 --augment 0.12 --work $G
wait $ARMS_PID

# The 3-image row: MNIST-LT rho=1000 with n_max 3000 (3000 ... 13, 6, 3 images; few-shot = the 13-, 6- and 3-image classes)
G3=runs/rho1000_n3000/gens
python benchmarks/tail_gain.py --imbalance 1000 --max-per-class 3000 --synthetic-weight 1 --jobs 1 \
  --arms real-cb,real-ra,oracle,cbdm-sqrt-1200:w1,cbdm-sqrt-1200:w1:gate,cbdm-sqrt-a12-1200:w1,cbdm-sqrt-a12-1200:w1:gate \
  --eval-gens cbdm-sqrt-1200,cbdm-sqrt-a12-1200 --gen-runs $G3 --work runs/tail_gain_rho1000_n3000 \
  --default-arm "${DEFAULT_ARM_N3000:-cbdm-sqrt-a12-1200:w1:gate}" --compare-gens "" --tag tail_gain_rho1000_n3000 &
ARMS_PID=$!
$L cbdm-sqrt     --imbalance 1000 --max-per-class 3000 --tau 1 --budgets 1200 --balance-power 0.5 --work $G3
$L cbdm-sqrt-a12 --imbalance 1000 --max-per-class 3000 --tau 1 --budgets 1200 --balance-power 0.5 --augment 0.12 --work $G3
wait $ARMS_PID
