"""Nested dicts compared leaf by leaf: what changed between two settings records."""
from __future__ import annotations


def dict_changes(old: dict, new: dict, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object, object]]:
    """(key path, old value, new value) of every leaf that differs, in sorted key order. A key only
    one side has reads as None on the other; two dicts under one key are compared inside."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b, key = old.get(k), new.get(k), (*prefix, k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += dict_changes(a, b, key)
        elif a != b:
            out.append((key, a, b))
    return out
