"""The synthetic cache: generated images in one HDF5 file with their labels, seeds and provenance.

``schema.py`` (the layout, version 1), ``plan.py`` (how many images each class gets), ``generate.py``
(the resumable generation loop) and ``staged.py`` (a first batch of every class, then only the classes
kept), ``writer.py`` / ``reader.py`` (write one; read one lazily, torch-free, for the plugin),
``torchrun.py`` (one shard per rank), ``export/`` (the images as a folder, a tar or webdataset shards)
and ``cli.py`` (``generate``, ``inspect``, ``merge-shards``, ``export``).
"""
