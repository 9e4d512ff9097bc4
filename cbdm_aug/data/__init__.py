"""Data readers, long-tail profiles and conversions. Light: no Lightning, diffusers or click."""
from cbdm_aug.data.longtail import balanced_holdout, count_table, longtail_counts, make_longtail
from cbdm_aug.data.sources import DataError, LabeledImages, load_digits, load_image_folder, load_npz, open_data

__all__ = ["DataError", "LabeledImages", "open_data", "load_image_folder", "load_npz", "load_digits",
           "make_longtail", "longtail_counts", "balanced_holdout", "count_table"]
