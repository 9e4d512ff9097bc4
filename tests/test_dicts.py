"""dict_changes: every differing leaf of two nested dicts, with its key path."""
from cbdm_aug.dicts import dict_changes


def test_changes_name_each_differing_leaf_by_its_path_and_a_missing_key_reads_as_none():
    old = {"a": 1, "train": {"lr": 0.1, "steps": 5}, "gone": 2}
    new = {"a": 1, "train": {"lr": 0.2, "steps": 5}, "added": {"x": 1}}
    assert dict_changes(old, new) == [(("added",), None, {"x": 1}), (("gone",), 2, None),
                                      (("train", "lr"), 0.1, 0.2)]
    assert dict_changes(new, new) == []
