#!/usr/bin/env bash
# The one command to run when a GPU is lent: training, fit-generator, sampling and classifier-training
# throughput side by side on this machine, in one table (benchmarks/gpu_check.py has the details); and
# the latent route at 256 px (issue 33: encode, fit-generator --autoencoder, generate + decode).
#
#   bash benchmarks/gpu_check.sh                 # on the GPU; writes benchmarks/results/gpu_check/
#   bash benchmarks/gpu_check.sh --dry --out DIR # tiny sizes on the CPU: checks every part runs (tests)
#
# Each part runs in its own process under its own time limit (seconds; override with
# GPU_CHECK_TIMEOUT_<PART>=N); a part that fails or times out is reported as such and the others
# still run. A part writes its rows as it measures them, so a stopped part keeps what it finished.
# Planned to take at most about 10.5 minutes on one H100 (the latent part at most 2.5 of them), compile
# warm-ups included (untested: no GPU was lent when this was written).
#
# On this project's lent GPU machines diffusers and kornia are not installed. Carry them as wheels
# (see /work/.library/device/README.md, "a Python package missing there"): here, in the repo root,
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 kornia==0.9.0 kornia_rs
# then name .whl in the call's carry and start its command with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD || exit
# (diffusers and kornia are pure-Python wheels; check each one's Requires-Dist for other missing needs).
set -u
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/results/gpu_check"
dry=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry) dry="--dry" ;;
    --out) out="$2"; shift ;;
    *) echo "usage: $0 [--dry] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
python="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$(dirname "$here")${PYTHONPATH:+:$PYTHONPATH}"

# Time limits in seconds: the compiled training arms dominate (the UNet's compile took over 170 s on an H200).
declare -A limit=([train]=210 [fit]=120 [sample]=90 [classify]=50 [latent]=150)
for part in train fit sample classify latent; do
  var="GPU_CHECK_TIMEOUT_${part^^}"
  t="${!var:-${limit[$part]}}"
  [ -n "$dry" ] && t="${!var:-300}"  # tiny sizes, but a busy CI machine imports slowly
  echo "== $part (limit ${t}s)"
  rm -f "$out/$part.json"
  timeout --kill-after=10 "$t" "$python" "$here/gpu_check.py" "$part" --out "$out" $dry >"$out/$part.log" 2>&1
  rc=$?
  case $rc in
    0) status="ok" ;;
    124|137) status="timed out after ${t}s" ;;
    *) status="failed (exit $rc): $(tail -n 1 "$out/$part.log" | cut -c1-160 | tr '|' '/')" ;;
  esac
  echo "$status" >"$out/$part.status"
  echo "   $status"
done
"$python" "$here/gpu_check.py" report --out "$out"
