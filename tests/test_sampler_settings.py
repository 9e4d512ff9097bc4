"""The sampler's settings (cbdm_aug.diffusion.sampler_settings): one home for the sampler defaults, read by
the CLIs, ``run``'s CacheSettings, evaluate's EvalOptions and ``generate_cache``; torch-free."""
import inspect
import subprocess
import sys
import textwrap

import pytest

from cbdm_aug.diffusion.sampler_settings import DEFAULT_STEPS, SAMPLER_NAMES, SAMPLING, SamplerSettings
from cbdm_aug.errors import ConfigError


def _default(command, name):
    return next(p for p in command.params if p.name == name).default


def test_importing_the_sampler_settings_does_not_import_torch():
    code = textwrap.dedent("""
        import sys, cbdm_aug.diffusion.sampler_settings
        heavy = [m for m in ("torch", "diffusers", "lightning", "click") if m in sys.modules]
        assert not heavy, heavy
    """)
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_way_of_sampling_reads_its_defaults_from_the_one_settings_type():
    from cbdm_aug.cache.cli import generate
    from cbdm_aug.evaluate.cli import evaluate_generator
    from cbdm_aug.evaluate.run import EvalOptions
    from cbdm_aug.pipeline.settings import CacheSettings

    assert SAMPLING == SamplerSettings() and SAMPLING.steps == DEFAULT_STEPS[SAMPLING.sampler]
    assert CacheSettings().sampling == SAMPLING
    assert EvalOptions().sampling == SAMPLING
    for command in (generate, evaluate_generator):
        assert _default(command, "sampler") == SAMPLING.sampler
        assert _default(command, "guidance") == SAMPLING.guidance
        assert _default(command, "seed") == SAMPLING.seed
        assert _default(command, "steps") is None  # the sampler's own count: SAMPLING.steps for the default
        assert tuple(next(p for p in command.params if p.name == "sampler").type.choices) == SAMPLER_NAMES


def test_the_sampler_function_has_no_defaults_of_its_own():
    from cbdm_aug.diffusion import sampling

    params = inspect.signature(sampling.sample).parameters
    assert all(params[n].default is inspect.Parameter.empty for n in ("sampler", "steps", "guidance"))
    assert sampling.SAMPLERS is SAMPLER_NAMES and sampling.DEFAULT_STEPS is DEFAULT_STEPS


def test_each_sampler_gets_its_own_step_count_unless_one_is_given():
    assert SamplerSettings.of("ddpm").steps == 1000 and SamplerSettings.of("ddim").steps == 50
    assert SamplerSettings.of("ddim", 7, guidance=2, seed=3) == SamplerSettings("ddim", 7, 2.0, 3)
    assert SamplerSettings(guidance=1).record() == SamplerSettings(guidance=1.0).record()  # w is a float


@pytest.mark.parametrize("kw, message", [
    ({"sampler": "euler"}, "unknown sampler 'euler'"),
    ({"steps": 0}, "steps must be an integer >= 1, got 0"),
    ({"steps": 2.5}, "steps must be an integer"),
    ({"guidance": -1.0}, "guidance must be finite and >= 0, got -1.0"),
    ({"guidance": float("nan")}, "guidance must be finite"),
    ({"guidance": float("inf")}, "guidance must be finite"),
    ({"seed": -1}, "seed must be an integer in"),
    ({"feedback": {"scale": 0}}, "feedback scale must be finite and > 0"),
])
def test_bad_settings_are_refused_with_the_bad_value_named(kw, message):
    with pytest.raises(ConfigError, match=message):
        SamplerSettings(**kw)


def test_bad_sampling_in_runs_cache_settings_and_in_evaluate_options_is_refused_the_same_way():
    from cbdm_aug.evaluate.run import EvalOptions
    from cbdm_aug.pipeline.settings import CacheSettings

    with pytest.raises(ConfigError, match="steps must be an integer >= 1, got 0"):
        CacheSettings(sample_steps=0)
    with pytest.raises(ConfigError, match="unknown sampler 'euler'"):
        EvalOptions(sampler="euler")
    assert EvalOptions(sampler="ddpm").steps == 1000  # concrete, as the report records it


def test_the_cache_stage_key_keeps_its_shape():
    # asdict(CacheSettings()) is the key of run's cache stage: a changed shape would redo every run folder's cache
    from cbdm_aug.pipeline.run import _cache_key
    from cbdm_aug.pipeline.settings import CacheSettings

    key = _cache_key(CacheSettings(filter_augment="none"))
    # issue 34 added filter, filter_top_share, first_batch, first_share and filter_false_positive_share: a cache made
    # before them is made again, on purpose
    # (the filter's criterion and the cap on each class's images changed what the stage makes)
    assert list(key) == ["top_up", "sampler", "sample_steps", "guidance", "filter", "filter_top_share",
                         "filter_confidence", "near_copy_ratio", "max_copy_share", "seed", "first_batch",
                         "first_share", "filter_false_positive_share"]
    # filter_augment (ninth pass) keys the stage only where it is not "none"; its default, "randaugment", remakes the
    # cache of a run folder made before it, on purpose (the judge changed what the stage keeps)
    assert _cache_key(CacheSettings())["filter_augment"] == "randaugment"
    with pytest.raises(ConfigError, match="filter_augment must be 'none' or 'randaugment', got 'flip'"):
        CacheSettings(filter_augment="flip")
    assert (key["sampler"], key["sample_steps"], key["guidance"], key["seed"]) == \
        (SAMPLING.sampler, SAMPLING.steps, SAMPLING.guidance, SAMPLING.seed)
