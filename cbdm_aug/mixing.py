"""The mixing rule's default, in a module without torch so that the run settings (read by the CLI's
``--help``) and the plugin's sampler share one source.

``MIN_REAL_SHARE``: at least this share of a class's places in an epoch go to its real images (each
once, then repeats); generated images fill at most the rest. The evidence is in docs/decisions.md.
"""
MIN_REAL_SHARE = 0.5
