#!/usr/bin/env bash
# `cbdm-aug run` on MNIST-LT rho=1000 as a new user would, at its defaults: the long-tailed training npz
# (exp profile, n_max 5000, data seed 0: 5000 ... 10, 5 images a class) and the official test split are
# written to a scratch folder (never to the repository), then `run` goes; its report, sample grid and
# per-class plot are copied to benchmarks/results/run_rho1000/ with the wall time.
#   bash benchmarks/run_rho1000.sh [SCRATCH]      (default /tmp/cbdm-run1000)
set -euo pipefail
cd "$(dirname "$0")/.."
S=${1:-/tmp/cbdm-run1000}
mkdir -p "$S"
python - "$S" <<'PY'
import sys, numpy as np
from cbdm_aug.data import make_longtail, open_data, write_npz
s = sys.argv[1]
lt = make_longtail(open_data("../shared/datasets/mnist.npz"), "exp", 1000, 5000, 0)
write_npz(f"{s}/mnist_lt1000.npz", x_train=lt.images, y_train=lt.labels, class_names=lt.class_names)
t = np.load("../shared/datasets/mnist.npz")
write_npz(f"{s}/mnist_test.npz", x_test=t["x_test"], y_test=t["y_test"], class_names=lt.class_names)
PY
start=$(date +%s)
cbdm-aug run "$S/mnist_lt1000.npz" --test "$S/mnist_test.npz" --out "$S/run"
R=benchmarks/results/run_rho1000
mkdir -p "$R"
cp "$S/run/report.md" "$S/run/samples.png" "$S/run/per_class_accuracy.png" "$R/"
echo "wall time $(( $(date +%s) - start )) s on $(nproc) cores, commit $(git rev-parse --short HEAD)" > "$R/wall_time.txt"
