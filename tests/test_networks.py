import pytest
import timm
import torch

import cbdm_aug.networks  # noqa: F401 - registers the models


@pytest.mark.parametrize("name,size,chans,classes", [
    ("resnet32_cifar", 32, 3, 10), ("resnet20_cifar", 32, 3, 100),
    ("resnet8_cifar", 28, 1, 10), ("resnet8_cifar", 8, 1, 10)])
def test_timm_create_model_builds_the_registered_cifar_resnets_with_the_right_output_shape(name, size, chans, classes):
    model = timm.create_model(name, pretrained=False, num_classes=classes, in_chans=chans)
    assert model(torch.randn(2, chans, size, size)).shape == (2, classes)


def test_resnet32_has_the_literatures_depth_and_about_0_46m_parameters():
    model = timm.create_model("resnet32_cifar", num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) + 1 == 32  # 31 convolutions and the linear classifier
    assert 0.45e6 < sum(p.numel() for p in model.parameters()) < 0.48e6


def test_the_timm_classifier_interface_works_on_the_cifar_resnets():
    model = timm.create_model("resnet8_cifar", num_classes=10, in_chans=1)
    model.reset_classifier(3)
    assert model(torch.randn(1, 1, 8, 8)).shape == (1, 3)
    assert model.forward_head(model.forward_features(torch.randn(1, 1, 8, 8)), pre_logits=True).shape == (1, 64)


def test_asking_for_pretrained_weights_is_a_clear_error():
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("resnet8_cifar", pretrained=True)


def test_the_cache_layer_does_not_import_the_classifier_layer():
    from pathlib import Path

    import cbdm_aug

    root = Path(cbdm_aug.__file__).parent / "cache"
    offenders = [p.name for p in root.glob("*.py") if "cbdm_aug.classify" in p.read_text()]
    assert offenders == []
