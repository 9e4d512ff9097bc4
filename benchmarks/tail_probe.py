"""What a generator makes of its rarest classes, before any classifier is trained on it: for each
snapshot, sample --n images of each rare class from noise and count what `filter-cache` would count:
the share that are near-copies of a training image (its criterion) and the share the filter
classifier gives their label with confidence >= 0.5. Writes a grid (real images, then samples, per
row) and a table.

    python benchmarks/tail_probe.py --imbalance 1000 --specs cbdm-sqrt-1200,ddpm-1200 \
        --classifier runs/tail_gain_rho1000/filter_classifier

Cheap (no classifier training): it screens generator budgets and batch balancing before
benchmarks/tail_gain.py spends CPU-hours on them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _env import commit_text, environment  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str((ROOT / "../shared/datasets/mnist.npz").resolve()))
    p.add_argument("--imbalance", type=float, default=1000.0)
    p.add_argument("--max-per-class", type=int, default=5000)
    p.add_argument("--specs", required=True,
                   help="snapshots in --gen-runs, comma-separated (SNAPSHOT:noise, the earlier spelling, is accepted)")
    p.add_argument("--classes", default="9,8,7", help="the rare classes to probe")
    p.add_argument("--n", type=int, default=32, help="samples per class and spec")
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--classifier", required=True, help="the filter classifier (a train-classifier run folder)")
    p.add_argument("--gen-runs", default=None)
    p.add_argument("--tag", default=None)
    args = p.parse_args(argv)
    from cbdm_aug.data import make_longtail, open_data
    from cbdm_aug.data.convert import convert_images
    from cbdm_aug.diffusion.sampling import sample, to_uint8
    from cbdm_aug.evaluate import metrics as M
    from cbdm_aug.evaluate.features import load_classifier_space
    from cbdm_aug.generator.run_dir import load_generator

    rho = f"{args.imbalance:g}"
    gen_runs = Path(args.gen_runs or ROOT / "runs" / f"rho{rho}" / "gens")
    tag = args.tag or f"tail_probe_rho{rho}"
    data = make_longtail(open_data(args.data), "exp", args.imbalance, args.max_per_class, 0)
    space = load_classifier_space(args.classifier)
    classes = [int(c) for c in args.classes.split(",")]
    rows, grid = [], []
    for spec in args.specs.split(","):
        snap, _, start = spec.partition(":")
        if start not in ("", "noise"):
            raise SystemExit(f"--specs {spec!r}: give SNAPSHOT or SNAPSHOT:noise (real-guided starts were removed)")
        gen = load_generator(gen_runs / snap, "cpu")
        real = convert_images(data.images, gen.image_size, gen.channels)
        for c in classes:
            seeds = [10_000 + k for k in range(args.n)]
            x = sample(gen.unet, torch.full((args.n,), c), seeds, image_size=gen.image_size, channels=gen.channels,
                       null_class=gen.null_class, sampler="dpmpp-sde", steps=20, guidance=args.guidance,
                       schedule=gen.schedule)
            u = to_uint8(x).numpy()
            # filter-cache's near-copy criterion (cbdm_aug/evaluate/filter.py)
            train = M.pixel_vectors(real[data.labels == c])
            sibling = M.kth_neighbour_distance(train, 1, 1024) if len(train) > 1 else None
            d, nearest = M.nearest_distance(M.pixel_vectors(u), train)
            limit = M.NEAR_COPY_RATIO * sibling[nearest] if sibling is not None else M.NEAR_COPY_FALLBACK
            copy = (d < limit).numpy()
            conf = (space.predict_proba(u)[:, c] >= 0.5).numpy()
            rows.append({"spec": snap, "class": c, "train_images": int((data.labels == c).sum()),
                         "near_copy_share": float(copy.mean()), "confident_share": float(conf.mean()),
                         "kept_share": float((conf & ~copy).mean())})
            left = real[data.labels == c][:8]
            grid.append(np.concatenate([*left, *[np.zeros_like(left[0])] * (8 - len(left)),
                                        np.full((gen.image_size, 3, gen.channels), 128, np.uint8), *u[:16]], 1))
    from PIL import Image

    g = np.concatenate([np.pad(r, ((1, 1), (0, 0), (0, 0))) for r in grid], 0)
    results = ROOT / "benchmarks" / "results"
    Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g).resize((g.shape[1] * 3, g.shape[0] * 3), Image.NEAREST) \
        .save(results / f"{tag}.png")
    env = environment()
    lines = [f"# Rare-class probe, MNIST-LT rho={rho} ({args.n} samples a class and snapshot, guidance {args.guidance:g})", "",
             f"commit {commit_text(env)}; {env['machine']['cpu']}", "",
             f"Grid `{tag}.png`: one row per (snapshot, class) in table order; left: up to 8 real training images of the "
             "class, right of the grey bar: 16 samples.", "",
             "| snapshot | class | real images | near-copy share | confident share | kept by the filter |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['spec']} | {r['class']} | {r['train_images']} | {r['near_copy_share']:.2f} | "
              f"{r['confident_share']:.2f} | {r['kept_share']:.2f} |" for r in rows]
    (results / f"{tag}.md").write_text("\n".join(lines) + "\n")
    (results / f"{tag}.json").write_text(json.dumps({"rows": rows, "settings": vars(args), **env}, indent=1, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
