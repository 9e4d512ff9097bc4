import pytest
import torch

from cbdm_aug.classify.metrics import classification_metrics, shot_groups

# Training counts put class 0 in many-shot (>100), classes 1 and 2 in medium (20..100, both ends
# included) and class 3 in few-shot (<20).
TRAIN_COUNTS = [500, 100, 20, 19]


def test_metrics_are_right_on_hand_made_predictions_including_the_shot_groups():
    target = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 2, 0, 0, 0, 0, 0])
    # per class: 3/4, 1/2, 1/4, 0/2; overall 5/12
    m = classification_metrics(preds, target, TRAIN_COUNTS)
    assert m["per_class"] == pytest.approx([0.75, 0.5, 0.25, 0.0])
    assert m["top1"] == pytest.approx(5 / 12)
    assert m["balanced"] == pytest.approx((0.75 + 0.5 + 0.25 + 0.0) / 4)
    assert m["many"] == pytest.approx(0.75)
    assert m["medium"] == pytest.approx((0.5 + 0.25) / 2)
    assert m["few"] == pytest.approx(0.0)
    assert m["groups"] == {"many": [0], "medium": [1, 2], "few": [3]}
    assert m["test_counts"] == [4, 2, 4, 2]


def test_logits_are_scored_by_their_argmax():
    target = torch.tensor([0, 1, 2])
    logits = torch.tensor([[2.0, 0, 0], [0, 0, 1.0], [0, 0, 3.0]])
    assert classification_metrics(logits, target, [5, 5, 5])["top1"] == pytest.approx(2 / 3)


def test_thresholds_are_configurable_and_an_empty_group_is_none():
    groups = shot_groups([5000, 1000, 150], many_threshold=1500, few_threshold=200)
    assert groups == {"many": [0], "medium": [1], "few": [2]}
    m = classification_metrics(torch.tensor([0, 1]), torch.tensor([0, 1]), [500, 300])
    assert m["few"] is None and m["medium"] is None and m["many"] == 1.0


def test_a_class_absent_from_the_test_set_does_not_count_as_zero():
    m = classification_metrics(torch.tensor([0, 0]), torch.tensor([0, 0]), [500, 10])
    assert m["per_class"] == [1.0, None]
    assert m["balanced"] == 1.0 and m["few"] is None
