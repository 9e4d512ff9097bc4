"""``cbdm-aug run``: the whole pipeline on a user's long-tailed data, as resumable stages."""
