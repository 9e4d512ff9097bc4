#!/usr/bin/env bash
# Issue 34's rows at `cbdm-aug run`'s default arm after the evidence's pooled noise and min_judged 20, the issue-17
# protocol (5 paired seeds, resnet8 4 epochs, top-up 500, filtered, weight 1, + RandAugment), each against the real
# floor alone (FLOOR: the same cache, no evidence) and the real-only arms:
#   1. MNIST-LT rho=1000, n_max 3000 (3000 ... 13, 6, 3 images);
#   2. CIFAR-10-LT rho=100 from the JPEG copy, 16x16 RGB + flips (the row `bars` in tail_gain_cifar10.json asks
#      for: the default arm's per_class_paired against best-real; few-shot there is the two rarest, --few-below 100);
#   3. MNIST-LT rho=1000, n_max 5000 (... 10, 5 images).
# One generator per row (the default's, DEFAULT_GEN, which is also FLOOR's), fitted beside the arms. Results go to
# *_issue34 tags, so the committed rows before stay. Resumable: rerun and every finished task is reused.
#   bash benchmarks/run_tail_gain_issue34.sh [n3000|cifar10|n5000 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
L="python benchmarks/_ladder.py"
eval "$(python benchmarks/tail_gain.py --print-default)"  # DEFAULT_ARM, DEFAULT_GEN, DEFAULT_GEN_STEPS, DEFAULT_GEN_OPTS
FLOOR=${DEFAULT_ARM%:evidence}
ROWS=${*:-n3000 cifar10 n5000}
for ROW in $ROWS; do
  case $ROW in
    n3000|n5000)
      NMAX=${ROW#n}; G=runs/rho1000_$ROW/gens; W=runs/tail_gain_rho1000_$ROW
      python benchmarks/tail_gain.py --imbalance 1000 --max-per-class "$NMAX" --jobs 1 --gen-runs $G --work $W \
        --arms "real-cb,real-ra,$FLOOR,$DEFAULT_ARM" --default-arm "$DEFAULT_ARM" --compare-gens "" \
        --tag "tail_gain_rho1000_${ROW}_issue34" &
      ARMS_PID=$!
      # shellcheck disable=SC2086 - DEFAULT_GEN_OPTS is a list of options
      $L "$DEFAULT_GEN" --imbalance 1000 --max-per-class "$NMAX" --budgets "$DEFAULT_GEN_STEPS" $DEFAULT_GEN_OPTS --work $G
      wait $ARMS_PID;;
    cifar10)
      S=${SCRATCH:-${TMPDIR:-/tmp}/cbdm-scratch}
      [ -d "$S/cifar10/train" ] || { mkdir -p "$S"; tar xzf ../shared/datasets/cifar10-jpeg.tar.gz -C "$S"; }
      mkdir -p runs/tail_gain_cifar10
      [ -f runs/tail_gain_cifar10/data.npz ] || python -c "import sys; sys.path.insert(0, 'benchmarks'); from pathlib import Path; from tail_gain import folder_pair_npz; folder_pair_npz(Path('$S/cifar10'), Path('runs/tail_gain_cifar10/data.npz'))"
      python benchmarks/tail_gain.py --data runs/tail_gain_cifar10/data.npz --dataset-name cifar10-jpeg --hflip \
        --imbalance 100 --few-below 100 --jobs 1 --gen-runs runs/cifar10/gens --work runs/tail_gain_cifar10 \
        --arms "real-cb,real-ra,$FLOOR,$DEFAULT_ARM" --default-arm "$DEFAULT_ARM" --compare-gens "" \
        --tag tail_gain_cifar10 &  # the file `bars` reads; the rows before: tail_gain_cifar10_before_issue34.*
      ARMS_PID=$!
      # shellcheck disable=SC2086
      $L "$DEFAULT_GEN" --data runs/tail_gain_cifar10/data.npz --imbalance 100 --budgets "$DEFAULT_GEN_STEPS" \
         $DEFAULT_GEN_OPTS --work runs/cifar10/gens
      wait $ARMS_PID;;
    *) echo "unknown row $ROW (n3000, cifar10, n5000)" >&2; exit 2;;
  esac
done
