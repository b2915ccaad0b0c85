"""Caption datasets: Karpathy-split JSON (COCO / Flickr30k layout) through `mmrobust eval retrieval
--data karpathy:PATH`, several captions per image, recall@K as CLIP_benchmark defines it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmrobust.cli.main import main
from mmrobust.data.captions import RetrievalSplit, karpathy_split
from mmrobust.data.manifest import PathPolicy
from mmrobust.errors import DataError
from mmrobust.eval.retrieval import recall_at_k
from mmrobust.world.shapes import render_scene, sample_scene


def _naive(sim, owner, k):
    """CLIP_benchmark's definitions, spelled out: top-k by score, a hit when a true match is among them."""
    n, m = sim.shape
    i2t = [any(owner[j] == i for j in sim[i].topk(k).indices.tolist()) for i in range(n)]
    t2i = [owner[j] in sim[:, j].topk(min(k, n)).indices.tolist() for j in range(m)]
    return sum(i2t) / n, sum(t2i) / m


def test_recall_with_several_captions_per_image_matches_the_naive_definition():
    sim = torch.tensor([[0.1, 0.9, 0.2, 0.0], [0.5, 0.6, 0.4, 0.3]])  # 2 images; captions 0,1 -> 0, 2,3 -> 1
    owner = torch.tensor([0, 0, 1, 1])
    r = recall_at_k(sim, ks=(1, 2, 3), caption_image=owner)
    assert r["image_to_text_R@1"] == 0.5 and r["image_to_text_R@3"] == 1.0  # image 1's best caption ranks 3rd
    assert r["text_to_image_R@1"] == 0.75  # only caption 0 scores image 1 (0.5) above its own (0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        n = int(torch.randint(2, 6, (1,), generator=g))
        owner = torch.randint(0, n, (12,), generator=g)
        owner[:n] = torch.arange(n)  # every image has a caption
        sim = torch.rand(n, 12, generator=g)
        for k in (1, 2, 5):
            r = recall_at_k(sim, ks=(k,), caption_image=owner)
            assert (r[f"image_to_text_R@{k}"], r[f"text_to_image_R@{k}"]) == pytest.approx(_naive(sim, owner, k))


def _karpathy(root, n_test=3):
    rng = np.random.default_rng(0)
    (root / "val2014").mkdir(parents=True)
    images = []
    for k in range(n_test + 1):
        scene = sample_scene(rng)
        render_scene(scene, image_size=32, rng=rng).save(root / "val2014" / f"im{k}.jpg")
        caps = [f"a photo of a {scene.color} {scene.shape}.", f"a {scene.shape}.", f"{scene.count} {scene.color}"]
        images.append({"filepath": "val2014", "filename": f"im{k}.jpg", "split": "test" if k < n_test else "train",
                       "sentences": [{"raw": c, "tokens": c.split()} for c in caps[:2 + k % 2]]})
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def test_karpathy_split_evaluates_through_the_cli_like_the_same_manifest(tmp_path, capsys):
    path = _karpathy(tmp_path / "coco")
    manifest = karpathy_split(f"karpathy:{path}", tmp_path / "m")
    rows = manifest.read_text().splitlines()
    assert rows[0] == "image,caption" and len(rows) == 1 + 2 + 3 + 2 and "im3" not in manifest.read_text()
    out = tmp_path / "eval"
    assert main(["eval", "retrieval", "--model", "mmrobust-micro", "--data", f"karpathy:{path}",
                 "--out", str(out)]) == 0
    m = json.loads((out / "results_retrieval.json").read_text())["metrics"]
    assert (m["n"], m["n_captions"], m["n_skipped"]) == (3, 7, 0) and m["image_to_text_R@10"] == 1.0
    assert (out / "data" / "manifest.csv").is_file() and not list(path.parent.glob("*.csv"))  # nothing in the data
    csv_out = tmp_path / "csv"  # the written manifest, read as a plain CSV from the data root
    assert main(["eval", "retrieval", "--model", "mmrobust-micro", "--data", str(out / "data" / "manifest.csv"),
                 "--data-root", str(path.parent), "--out", str(csv_out)]) == 0
    assert json.loads((csv_out / "results_retrieval.json").read_text())["metrics"] == m


def test_retrieval_split_groups_rows_of_one_image(tmp_path):
    path = _karpathy(tmp_path / "coco")
    manifest = karpathy_split(f"karpathy:{path}", tmp_path / "m")
    split = RetrievalSplit(manifest, image_size=32, paths=PathPolicy.of(manifest, str(path.parent)))
    assert len(split) == 3 and split.caption_image == [0, 0, 1, 1, 1, 2, 2] and len(split.captions) == 7
    assert split[1]["index"] == 1 and split[1]["image"].shape == (3, 32, 32)


def test_bad_caption_files_are_one_line_errors(tmp_path, capsys):
    path = _karpathy(tmp_path / "coco")
    with pytest.raises(DataError, match="no images in split 'val'"):
        karpathy_split(f"karpathy:{path}", tmp_path / "a", split="val")
    bad = tmp_path / "bad.json"
    for text, msg in (("{not json", "not valid JSON"), ('{"annotations": []}', "no 'images' list"),
                      ('{"images": [{"filename": "a.jpg", "split": "test", "sentences": [{}]}]}', "without a 'raw'")):
        bad.write_text(text)
        with pytest.raises(DataError, match=msg):
            karpathy_split(f"karpathy:{bad}", tmp_path / "b")
    for argv, msg in ((["--data", f"karpathy:{tmp_path / 'missing.json'}"], "does not exist"),
                      (["--data", f"karpathy:{path}", "--split", "dev"], "is not one of")):
        rc = main(["eval", "retrieval", "--model", "mmrobust-micro", "--out", str(tmp_path / "e"), *argv])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and msg in err, err
