"""A classifier that starts from pretrained weights in a local file, loaded by timm's own mechanism.

``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH), num_classes=K)`` reads the
file with ``timm.models.load_state_dict`` (a bare ``state_dict``, or a checkpoint dict under ``state_dict``,
``model`` or an EMA key; ``.safetensors`` too), adapts the stem to other channel counts and drops the head
named by the model's ``pretrained_cfg["classifier"]`` when the class counts differ. We set the overlay's
``num_classes`` to 0, so the head is always re-made for the user's K classes, even when the file's head has
K outputs too: its classes are someone else's.

timm's loader is not strict once it drops a head, so a file for another architecture would load silently
in part. ``check_weights`` therefore compares the file's tensors with the model's first, and every bad file
is one line naming it: missing, unreadable (truncated), another architecture, a shape mismatch.

Provenance: ``provenance`` gives the file's sha256 and ``backbone_sha256``, a digest of every tensor of the
model but its head as built, before the first step; equal digests mean the same starting weights.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from cbdm_aug.classify.recipe import RecipeError

KEY = "model.pretrained_file"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _head_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    return tuple(f"{h}." for h in ((head,) if isinstance(head, str) else head))


def backbone_digest(state_dict: dict, head: tuple[str, ...]) -> str:
    """sha256 over the names, shapes and bytes of every tensor whose name does not start with a ``head``
    prefix, in name order."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        if k.startswith(head):
            continue
        t = state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}:{tuple(t.shape)}:{t.dtype}\n".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict:
    """The file's tensors, read as timm reads them; a ``RecipeError`` naming the file when it cannot be."""
    from timm.models import load_state_dict

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{KEY} {path}: no such file (pretrained weights are read from a local file; "
                          "nothing is downloaded)")
    try:
        sd = load_state_dict(str(path), use_ema=False)
    except Exception as e:  # noqa: BLE001 - torch.load's errors for a cut or foreign file vary by version
        raise RecipeError(f"{KEY} {path}: not a readable weights file, truncated or not a saved state_dict "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})") from None
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise RecipeError(f"{KEY} {path}: holds no state_dict of tensors (save one with "
                          "torch.save(model.state_dict(), PATH))")
    return sd


def check_weights(name: str, path: str | Path, num_classes: int, in_chans: int, **kwargs) -> None:
    """Fail in one line when the file at ``path`` cannot initialise timm model ``name`` (its head aside)."""
    import timm

    import cbdm_aug.networks  # noqa: F401 - registers the *_cifar models with timm

    if not timm.is_model(name):
        raise RecipeError(f"model.name {name!r} is not a timm model; try resnet8_cifar or a name from timm.list_models()")
    sd = read_state_dict(path)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    head, want = _head_prefixes(model), model.state_dict()
    first = ((getattr(model, "pretrained_cfg", None) or {}).get("first_conv") or "") + ".weight"
    missing = [k for k in want if not k.startswith(head) and k not in sd]
    extra = [k for k in sd if not k.startswith(head) and k not in want]
    if missing or extra:
        raise RecipeError(
            f"{KEY} {path}: not weights for {name} ({len(missing)} of its tensors missing"
            + (f", e.g. {missing[0]}" if missing else "") + f"; {len(extra)} tensors it does not have"
            + (f", e.g. {extra[0]}" if extra else "") + f"); give a state_dict saved from timm.create_model({name!r})")
    for k, t in want.items():
        if k.startswith(head) or tuple(sd[k].shape) == tuple(t.shape):
            continue
        if k == first and sd[k].ndim == 4 and sd[k].shape[0] == t.shape[0] and sd[k].shape[2:] == t.shape[2:]:
            continue  # another channel count: timm adapts the stem (adapt_input_conv)
        raise RecipeError(f"{KEY} {path}: shape mismatch for {name}: {k} is {tuple(sd[k].shape)} in the file and "
                          f"{tuple(t.shape)} in the model (another width or variant of it?)")


def create_pretrained(name: str, path: str | Path, num_classes: int, in_chans: int, **kwargs) -> torch.nn.Module:
    """timm model ``name`` from the weights at ``path`` with a new head for ``num_classes``; checked first."""
    import timm

    check_weights(name, path, num_classes, in_chans, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path), "num_classes": 0},
                                 num_classes=num_classes, in_chans=in_chans, **kwargs)
    except RuntimeError as e:
        raise RecipeError(f"{KEY} {path}: timm could not load it into {name} ({str(e).splitlines()[0][:200]})") from None


def provenance(model: torch.nn.Module, path: str | Path | None) -> dict | None:
    """What metrics.json records about the starting weights (None: a random initialisation)."""
    if path is None:
        return None
    return {"file": str(Path(path).resolve()), "sha256": file_sha256(path),
            "backbone_sha256": backbone_digest(model.state_dict(), _head_prefixes(model))}
