"""``cbdm-aug run DATA --test TEST --out OUT``."""
from __future__ import annotations

from pathlib import Path

import click

from cbdm_aug.diffusion.unet import PRESETS
from cbdm_aug.pipeline.settings import CPU_GEN_STEPS, GPU_GEN_STEPS, ArmSettings, GeneratorSettings


@click.command("run")
@click.argument("data", metavar="DATA")
@click.option("--test", default=None, help="Labelled test images with the same class names: an image folder or .npz.")
@click.option("--holdout-per-class", type=int, default=0,
              help="Without --test: split this many images a class off DATA as a balanced test set.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Run folder (rerun to resume or reuse).")
@click.option("--generator", default=None, type=click.Path(exists=True, file_okay=False),
              help="Reuse this fitted generator run (fit-generator's folder) instead of fitting one.")
@click.option("--autoencoder", default=None, type=click.Path(exists=True, file_okay=False),
              help="Fit a latent generator on this diffusers autoencoder's latents (fit-generator --autoencoder): "
                   "the images keep their size, and --augment is off (pixel warps do not transfer to latents).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="Generator UNet [default: cpu on a CPU; small, or cifar-paper from 32 px, on a GPU].")
@click.option("--gen-steps", type=int, default=None,
              help=f"Generator training steps [default: {CPU_GEN_STEPS} on a CPU, {GPU_GEN_STEPS} on a GPU].")
@click.option("--image-size", type=int, default=None,
              help="Image size of the generator [default: the data's, at most 16 on a CPU, 64 on a GPU]; "
                   "generated images are resized to the classifier's size.")
@click.option("--classifier-size", type=int, default=None,
              help="Image size of the classifiers [default: the data's; on a CPU without --pretrained or "
                   "--classifier-recipe, the generator's].")
@click.option("--model", default=None, help="Classifier: a timm model name [default: sized from the image size].")
@click.option("--pretrained", type=click.Path(), default=None,
              help="Start every classifier from these local weights (a state_dict saved from the --model; "
                   "the head is re-made for your classes). Nothing is downloaded.")
@click.option("--classifier-recipe", type=click.Path(), default=None, metavar="RECIPE.yaml",
              help="A train-classifier recipe for the arms' model, optimiser, schedule, size and weights; run "
                   "adds only the data paths and the arms' differences (RandAugment, generated images).")
@click.option("--classifier-epochs", type=int, default=None,
              help="Epochs of each classifier run [default: about 40,000 images drawn, 4..30 epochs].")
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated seeds; each arm trains once per seed.")
@click.option("--device", default="auto", show_default=True, help="auto (cuda if available), cpu, cuda or cuda:N.")
@click.option("--augment", "augment_p", type=click.FloatRange(0, 1), default=GeneratorSettings().augment_p,
              show_default=True,
              help="The generator's augmentation-conditioned training (fit-generator --augment): each warp "
                   "with this probability; 0 is off.")
@click.option("--min-real-share", type=click.FloatRange(0, 1), default=ArmSettings().min_real_share, show_default=True,
              help="The + synthetic arms' real floor: at least this share of a class's places in an epoch go to its "
                   "real images (the plugin's BalancedSyntheticSampler(min_real_share=)); 0 is no floor.")
@click.option("--evidence/--no-evidence", default=ArmSettings().evidence, show_default=True,
              help="Judge each class by cross-fitting on the training images and give generated images only to "
                   "the classes they help (--no-evidence: every class the filter and gate passed).")
@click.option("--randaugment-synthetic/--randaugment-real-only", default=ArmSettings().randaugment_synthetic,
              show_default=True,
              help="RandAugment + synthetic: RandAugment the generated images too, or the real images only (the "
                   "default: on our CIFAR-10 folder RandAugment on generated images cost a 16-image class 4 points; "
                   "docs/decisions.md).")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable image files (and report how many) instead of failing.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def run(data, test, holdout_per_class, out, generator, autoencoder, preset, gen_steps, image_size, classifier_size,
        model, pretrained, classifier_recipe, classifier_epochs, seeds, device, augment_p, min_real_share, evidence,
        randaugment_synthetic, skip_bad, no_progress):
    """Will generated images help your rare classes? Fit a CBDM generator on DATA (already
    long-tailed: an image folder, an .npz or `digits`), top every class up with filtered, per-class
    gated generated images, train four classifier arms over --seeds (the control: class-balanced
    re-sampling; RandAugment; and each of them + the synthetic images) and report paired differences
    with 95% intervals and a verdict.

    Writes OUT/report.md, samples.png and per_class_accuracy.png. Rerunning the same command reuses
    the finished stages, resumes an interrupted one, and reruns a stage whose settings changed.
    """
    from cbdm_aug.classify.cli import parse_seeds
    from cbdm_aug.pipeline.run import run_pipeline
    from cbdm_aug.pipeline.settings import RunOptions

    seed_list = parse_seeds(seeds)
    try:
        opts = RunOptions(data=data, test=test, holdout_per_class=holdout_per_class, skip_bad=skip_bad, generator=generator,
                          autoencoder=str(Path(autoencoder).resolve()) if autoencoder else None,
                          preset=preset, gen_steps=gen_steps, image_size=image_size,
                          classifier_size=classifier_size, model=model, pretrained=pretrained,
                          classifier_recipe=classifier_recipe,
                          classifier_epochs=classifier_epochs, seeds=tuple(seed_list), device=device,
                          fit=GeneratorSettings(augment_p=augment_p),
                          arm=ArmSettings(evidence=evidence, min_real_share=min_real_share or None,
                                          randaugment_synthetic=randaugment_synthetic))
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    run_pipeline(opts, out, echo=click.echo, progress=not no_progress)
