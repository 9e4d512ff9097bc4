import json
import subprocess
import sys

import pytest

from cbdm_aug.mixing import DECISIONS_FORMAT, DecisionsError, find_decisions, read_shares, refused


def test_both_layouts_of_the_decisions_file_give_the_same_shares(tmp_path):
    old = tmp_path / "old" / "decisions.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"a": 1.0, "b": 0.0}))
    new = tmp_path / "decisions.json"
    new.write_text(json.dumps({"format": DECISIONS_FORMAT, "version": 2,
                               "classes": {"a": {"share": 1.0, "why": "used"}, "b": {"share": 0, "why": "no"}}}))
    assert read_shares(old) == read_shares(new) == {"a": 1.0, "b": 0.0}
    assert refused(read_shares(new)) == ["b"]


def test_the_decisions_file_is_found_beside_its_cache(tmp_path):
    cache = tmp_path / "filtered.h5"
    assert find_decisions(cache) is None
    (tmp_path / "decisions.json").write_text("{}")
    assert find_decisions(cache) == tmp_path / "decisions.json"


@pytest.mark.parametrize("text", ["[1, 2]", "not json", '{"a": 2}', '{"a": "x"}', '{"a": true}',
                                  json.dumps({"format": DECISIONS_FORMAT, "classes": [1]})])
def test_a_bad_decisions_file_is_one_error_naming_it(tmp_path, text):
    p = tmp_path / "decisions.json"
    p.write_text(text)
    with pytest.raises(DecisionsError, match="decisions file"):
        read_shares(p)


def test_the_mixing_module_imports_without_torch():
    code = "import sys, cbdm_aug.mixing; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
