from pathlib import Path

import pytest
from click.testing import CliRunner

from cbdm_aug.classify.cli import train_classifier
from cbdm_aug.classify.recipe import RecipeError, load_recipe, save_recipe

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.yaml"))


def test_a_set_override_replaces_the_recipe_value_with_the_fields_type(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("schedule:\n  epochs: 200\ndata:\n  train: digits\n")
    r = load_recipe(path, ["schedule.epochs=3", "optim.lr=0.5", "schedule.milestones=[1, 2]",
                           "data.max_per_class=null", "data.hflip=true", "sampling.cache=x.h5"])
    assert r.schedule.epochs == 3 and isinstance(r.schedule.epochs, int)
    assert r.optim.lr == 0.5 and r.schedule.milestones == (1, 2)
    assert r.data.max_per_class is None and r.data.hflip is True and r.sampling.cache == "x.h5"
    assert r.data.train == "digits"


@pytest.mark.parametrize("override", ["schedule.epoch=3", "optimizer.lr=1", "data.train.path=x"])
def test_an_unknown_key_in_set_is_a_clear_error_naming_it(override):
    with pytest.raises(RecipeError, match="unknown recipe key|not a section") as e:
        load_recipe(None, [override])
    assert override.split("=")[0].split(".")[0] in str(e.value)


def test_an_unknown_key_in_the_yaml_is_a_clear_error_naming_it(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("loss:\n  kind: ce\n  temperature: 2\n")
    with pytest.raises(RecipeError, match=r"unknown recipe key loss\.temperature"):
        load_recipe(path)


def test_a_value_of_the_wrong_type_or_range_names_the_key():
    with pytest.raises(RecipeError, match="schedule.epochs"):
        load_recipe(None, ["schedule.epochs=many"])
    with pytest.raises(RecipeError, match="loss.kind"):
        load_recipe(None, ["loss.kind=focal"])


def test_the_resolved_recipe_round_trips_through_yaml(tmp_path):
    r = load_recipe(None, ["schedule.epochs=7", "schedule.milestones=[3,5]", "loss.kind=logit-adjustment"])
    save_recipe(r, tmp_path / "resolved.yaml", header="a comment")
    assert load_recipe(tmp_path / "resolved.yaml") == r


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_shipped_recipe_loads_and_dry_runs(recipe):
    load_recipe(recipe)
    result = CliRunner().invoke(train_classifier, [str(recipe), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "nothing trained" in result.output


def test_the_shipped_recipes_cover_mnist_cifar10_cifar100_and_digits():
    stems = {p.stem for p in RECIPES}
    for data in ("mnist-lt", "cifar10-lt", "cifar100-lt", "digits-lt"):
        assert {f"{data}-baseline", f"{data}-balanced-softmax", f"{data}-synthetic"} <= stems
