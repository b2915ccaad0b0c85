"""Zero-shot classifier and ASR against naive computations on hand-built cases."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from mmrobust.eval.backdoor import attack_success, evaluate_backdoor
from mmrobust.eval.retrieval import recall_at_k
from mmrobust.eval.zeroshot import Classifier, zero_shot_weights
from mmrobust.models import create_clip


def test_zero_shot_weights_equal_naive_template_average():
    model = create_clip("mmrobust-micro", seed=0)
    classes, templates = ["star", "ring", "bar"], ["a photo of a {}.", "a {} drawing", "{}"]
    got = zero_shot_weights(model, classes, templates)
    for c, name in enumerate(classes):
        embs = [F.normalize(model.encode_text(model.tokenize([t.format(name)]))[0], dim=0) for t in templates]
        mean = sum(embs) / len(embs)
        assert torch.allclose(got[c], mean / mean.norm(), atol=1e-6)
    assert torch.allclose(got.norm(dim=1), torch.ones(3), atol=1e-6)


def test_classifier_logits_are_scaled_cosines():
    model = create_clip("mmrobust-micro", seed=0)
    W = F.normalize(torch.randn(4, 32), dim=-1)
    x = torch.rand(3, 3, 16, 16)
    emb = model.encode_image(x)
    naive = torch.stack([torch.stack([100 * (emb[i] / emb[i].norm()) @ W[c] for c in range(4)]) for i in range(3)])
    assert torch.allclose(Classifier(W, 100.0, "zero-shot").logits(model, x), naive, atol=1e-4)


def test_asr_excludes_target_class_images():
    labels = torch.tensor([0, 1, 2, 2, 2, 1])
    pred = torch.tensor([2, 2, 2, 2, 0, 0])  # target 2; the three class-2 images must not count
    asr, n = attack_success(pred, labels, target=2)
    assert n == 3 and abs(asr - 2 / 3) < 1e-6
    asr_other, n_other = attack_success(pred, labels, target=0)
    assert n_other == 5 and abs(asr_other - 2 / 5) < 1e-6


class _Rows(torch.utils.data.Dataset):
    """Hand-built labelled dataset: image i is constant i/10."""

    def __init__(self, labels):
        self.labels = labels

        class _S:
            skipped: dict = {}

        self.skips = _S()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": torch.full((3, 4, 4), i / 10), "label": self.labels[i], "index": i}


class _Oracle(torch.nn.Module):
    """'Model' whose embedding is one-hot: class 1 for triggered images (pixel 0 == 1), else its label."""

    def __init__(self, labels):
        super().__init__()
        self.labels = labels

    def encode_image(self, images, normalize=False):
        out = torch.zeros(len(images), 3)
        for k, img in enumerate(images):
            cls = 1 if img[0, 0, 0] == 1.0 else self.labels[round(float(img[0, 1, 1]) * 10)]
            out[k, cls] = 1.0
        return out


def test_evaluate_backdoor_hand_built():
    labels = [0, 1, 2, 1, 0, 2]
    ds, model = _Rows(labels), _Oracle(labels)
    clf = Classifier(torch.eye(3), 1.0, "zero-shot")

    def trigger(img, generator=None):
        img = img.clone()
        img[:, 0, 0] = 1.0
        return img

    metrics, rows = evaluate_backdoor(model, ds, clf, trigger=trigger, target=1)
    assert metrics["clean_top1"] == 1.0
    assert metrics["n_asr"] == 4 and metrics["asr"] == 1.0  # the two class-1 images are excluded
    assert [r["pred_triggered"] for r in rows] == [1, None, 1, None, 1, 1]


def test_recall_at_k_hand_built():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.7, 0.0], [0.0, 0.0, 0.5]])
    r = recall_at_k(sim, ks=(1, 2))
    assert abs(r["image_to_text_R@1"] - 2 / 3) < 1e-6 and r["image_to_text_R@2"] == 1.0
    assert r["text_to_image_R@1"] == 1.0
