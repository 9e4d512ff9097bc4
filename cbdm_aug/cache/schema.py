"""The synthetic-cache HDF5 schema, version 1: names, the layout, and the error type.

    /images   uint8 (N, H, W, C)   contiguous, uncompressed, allocated at creation
    /labels   int64 (N,)           class index of each image; written at creation
    /seeds    int64 (N,)           the seed each image was sampled from; written at creation

Readers ignore any other dataset (caches from versions with real-guided generation carry /sources).

Attributes of the root group:

    schema           "cbdm-aug-cache"
    schema_version   1
    class_names      JSON list of str; label i is class_names[i]
    complete         bool; True only once every image is written
    num_done         int; images [0, num_done) of this file are final (the resume point)
    generator        JSON: the run's UNet config, image size, channels, schedule, class counts
                     and weights_sha256
    sampler          JSON: {"sampler", "steps", "guidance", "seed"}, plus "feedback" when used
    plan             JSON: {"policy", "counts": {class: n}, "real_counts": {class: n}, "total"}
    shard            JSON: {"index", "count", "start", "stop"} (global image range) or "null"
    package_version  the cbdm-aug version that wrote the file
    command          the command line that wrote it, so an error can say how to resume

Why contiguous and uncompressed: every image sits at a fixed byte offset, so a random read by a
DataLoader worker is one ``pread`` (the reader even memory-maps it) with no chunk index lookup and
no decompression. Small images compress only modestly with HDF5's lossless filters, so
compression would buy little space for a decode on every read. And because the whole layout is allocated when
the file is created, generating only overwrites raw bytes and one counter attribute: a killed run
leaves a file whose metadata is intact and whose ``num_done`` prefix is final. Files that tools
such as ``h5repack`` rewrite with chunks or compression still read correctly (through h5py).
"""
from __future__ import annotations

from cbdm_aug.errors import UserError

SCHEMA = "cbdm-aug-cache"
SCHEMA_VERSION = 1

IMAGES = "images"
LABELS = "labels"
SEEDS = "seeds"

# Attributes a v1 file must carry; JSON-valued ones are stored as str.
REQUIRED_ATTRS = ("schema", "schema_version", "class_names", "complete", "num_done", "generator",
                  "sampler", "plan", "shard", "package_version")
JSON_ATTRS = ("class_names", "generator", "sampler", "plan", "shard")

# Settings that must match for a rerun to resume a partial file (batch size and device may differ).
RESUME_KEYS = ("class_names", "generator", "sampler", "plan", "shard")


class CacheError(UserError):
    """A cache file that is missing, unfinished, truncated, foreign or from a newer version, or a
    generate/merge request that conflicts with an existing file."""
