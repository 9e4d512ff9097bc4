"""``cbdm-aug export``: a synthetic cache (and optionally the real images) as files other trainers read.

One module per format, as timm keeps one reader per format:

    folder.py      DIR/<class>/<id>.png                      torchvision ImageFolder, timm's folder reader
    tar.py         DIR/images.tar, members <class>/<id>.png  timm's tar reader
    webdataset.py  DIR/shard-000000.tar, ... (<id>.png, <id>.cls) and DIR/_info.json
                                                             the webdataset package, timm's ``wds/`` reader

and what they share: ``policy.py`` (the settings, and which images each class gets, honouring the
run's decisions), ``images.py`` (one image's bytes and their check, the worker pool), ``manifest.py``
(``manifest.csv``) and ``run.py`` (``export_cache``: the output folder, ``export.json``, resume).

Light: h5py, numpy and PIL; the worker processes import nothing else.
"""
from cbdm_aug.cache.export.policy import FORMATS, NO_DECISIONS, ExportError, ExportSettings
from cbdm_aug.cache.export.run import export_cache

__all__ = ["FORMATS", "NO_DECISIONS", "ExportError", "ExportSettings", "export_cache"]
