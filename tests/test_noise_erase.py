"""PAR's noise + erasing view (the PerturbAndRecover reference's training transform)."""
from __future__ import annotations

import torch

from mmrobust.data.noise_erase import OPENAI_MEAN, noise_erase, noise_erase_batch


def test_view_is_seeded_in_range_and_per_sample():
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    seeds = list(range(100, 108))
    a, b = noise_erase_batch(images, seeds), noise_erase_batch(images, seeds)
    assert torch.equal(a, b) and a.shape == images.shape
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert not torch.equal(noise_erase_batch(images, [s + 1 for s in seeds]), a)
    assert torch.equal(noise_erase_batch(images[3:4], seeds[3:4])[0], a[3])  # independent of batch mates


def test_noise_only_brightens_and_erasing_fills_a_small_square_with_the_mean():
    img = torch.full((3, 32, 32), 0.3)
    noisy = noise_erase(img, torch.Generator().manual_seed(0), p_noise=1.0, p_erase=0.0)
    assert bool((noisy >= img).all()) and float((noisy - img).abs().max()) > 0.1  # clip(N(0, 0.2^2), 0, 1) >= 0
    erased = noise_erase(img, torch.Generator().manual_seed(0), p_noise=0.0, p_erase=1.0, area=(0.01, 0.01))
    changed = (erased != img).any(0)
    side = round((0.01 * 32 * 32) ** 0.5)
    assert int(changed.sum()) == side * side  # one square of 1% of the area
    assert torch.allclose(erased[:, changed], torch.tensor(OPENAI_MEAN)[:, None])
    assert torch.equal(noise_erase(img, torch.Generator().manual_seed(0), p_noise=0.0, p_erase=0.0), img)


def test_dataset_serves_the_view_seeded_by_epoch_and_index(tmp_path):
    from mmrobust.data.datasets import ImageTextDataset
    from mmrobust.world.shapes import generate_world

    world = generate_world(tmp_path, n_train=12, n_test=4, seed=0)
    ds = ImageTextDataset(world.train_manifest, image_size=32, views=("image_noise_erase",), seed=0)
    views = [ds[(0, i)]["image_noise_erase"] for i in range(12)]
    assert all(torch.equal(v, ds[(0, i)]["image_noise_erase"]) for i, v in enumerate(views))
    assert any(not torch.equal(v, ds[(0, i)]["image"]) for i, v in enumerate(views))
    assert "image_aug" not in ds[(0, 0)]
