"""The user's data in memory: readers that turn an image folder, an ``.npz`` or scikit-learn's digits
into one ``LabeledImages`` (``sources.py``), the npz format's one reader and one writer (``npz.py``),
long-tail profiles and hold-outs (``longtail.py``) and size/channel conversion (``convert.py``).
Light: numpy and PIL; no torch, Lightning, diffusers or click."""
from cbdm_aug.data.longtail import balanced_holdout, count_table, longtail_counts, make_longtail
from cbdm_aug.data.npz import load_npz, write_npz
from cbdm_aug.data.sources import DataError, LabeledImages, load_digits, load_image_folder, open_data

__all__ = ["DataError", "LabeledImages", "open_data", "load_image_folder", "load_npz", "write_npz", "load_digits",
           "make_longtail", "longtail_counts", "balanced_holdout", "count_table"]
