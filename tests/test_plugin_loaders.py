"""The timm loader helper and the Lightning DataModule, on CPU with tiny data."""
import numpy as np
import torch
from PIL import Image

from cbdm_aug.cache.writer import write_cache

NAMES = ["a", "b"]


class PilSet(torch.utils.data.Dataset):
    classes = NAMES
    targets = [0, 0, 0, 0, 1]

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return Image.new("RGB", (8, 8), (i * 40, 0, 0)), self.targets[i]


def _cache(tmp_path):
    return write_cache(tmp_path / "s.h5", np.zeros((3, 8, 8, 3), np.uint8), [1, 1, 1], class_names=NAMES)


def test_the_timm_loader_uses_the_models_transform_our_wrapper_and_our_sampler(tmp_path):
    import timm

    from cbdm_aug.plugin import BalancedSyntheticSampler, RealSyntheticDataset
    from cbdm_aug.plugin.loaders import create_timm_loader

    model = timm.create_model("resnet18", pretrained=False, num_classes=2)
    loader = create_timm_loader(model, PilSet(), _cache(tmp_path), batch_size=4, num_workers=0,
                                data_config={"input_size": (3, 16, 16)})
    assert isinstance(loader.sampler, BalancedSyntheticSampler) and isinstance(loader.dataset, RealSyntheticDataset)
    loader.sampler.set_epoch(0)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and x.min() < 0  # normalised
    assert len(loader) == 2  # 2 classes x 4 real images of the head class, batches of 4


def test_the_datamodule_fits_two_steps_under_a_lightning_trainer_without_sampler_replacement(tmp_path):
    import pytorch_lightning as pl

    from cbdm_aug.plugin.loaders import BalancedDataModule

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3 * 8 * 8, 2)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x.flatten(1)), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    import torchvision.transforms as T

    dm = BalancedDataModule(PilSet(), _cache(tmp_path), transform=T.ToTensor(), batch_size=2, num_workers=0)
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, use_distributed_sampler=False, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Tiny(), datamodule=dm)
    assert trainer.global_step == 2
    assert type(trainer.train_dataloader.sampler).__name__ == "BalancedSyntheticSampler"


def test_the_loader_and_the_datamodule_honour_the_decisions_beside_the_cache_unless_told_not_to(tmp_path):
    import json

    import timm

    from cbdm_aug.plugin.loaders import BalancedDataModule, create_timm_loader

    cache = _cache(tmp_path)
    (tmp_path / "decisions.json").write_text(json.dumps({"a": 1.0, "b": 0.0}))
    model = timm.create_model("resnet18", pretrained=False, num_classes=2)
    for decisions, synthetic in (("auto", 0), (None, 3)):
        loader = create_timm_loader(model, PilSet(), cache, batch_size=4, num_workers=0, decisions=decisions,
                                    data_config={"input_size": (3, 16, 16)})
        dm = BalancedDataModule(PilSet(), cache, batch_size=2, num_workers=0, decisions=decisions)
        dm.setup("fit")
        assert int(loader.dataset.is_synthetic.sum()) == int(dm.train_dataset.is_synthetic.sum()) == synthetic
