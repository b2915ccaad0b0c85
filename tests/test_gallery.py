"""Pictures people look at: example grids (clean / attacked / change magnified, with predictions), the eps curve and
the trigger, declared in records' files.plots, embedded by the report, and never fatal to a record."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mmrobust.jsonio import read_json
from mmrobust.reports.contract import Picture, Record, write_record
from mmrobust.reports.gallery import DPI, Shown, example_grid, grid_size, magnification, magnified, to_hwc
from mmrobust.reports.png import is_ours
from mmrobust.reports.replies import Reply, reply_grid, reply_grid_size


def _size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def test_magnified_change_is_the_formula_and_k_fills_the_grey_range():
    x = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    d = (torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(1)) * 2 - 1) * (4 / 255)
    k = magnification([(x, x + d)])
    assert k == int(0.5 / float(d.abs().max()))  # the largest k with k * max|d| <= 0.5: about 31 at 4/255
    want = np.clip(0.5 + k * d.double().numpy().transpose(1, 2, 0), 0, 1)
    assert np.allclose(magnified(x, x + d, k), want, atol=1e-6)
    assert magnification([(x, x)]) == 1 and np.allclose(magnified(x, x, 1), 0.5)


@pytest.mark.parametrize("image, shape", [(np.zeros((1, 4, 6)), (4, 6, 3)), (np.zeros((4, 6)), (4, 6, 3)),
                                          (np.zeros((4, 6, 3)), (4, 6, 3)), (torch.zeros(3, 4, 6), (4, 6, 3)),
                                          (np.zeros((4, 4, 6)), (4, 6, 3)), (np.zeros((5, 6, 4)), (5, 6, 3))])
def test_images_of_any_layout_become_rgb_in_range(image, shape):
    out = to_hwc(image)
    assert out.shape == shape and out.min() >= 0 and out.max() <= 1
    assert to_hwc(np.array([[np.nan, 2.0], [-1.0, 0.5]])).tolist() == [[[0.0] * 3, [1.0] * 3], [[0.0] * 3, [0.5] * 3]]


def test_grids_grow_with_examples_and_survive_odd_images(tmp_path):
    """1 example, grey (1 channel), non-square, unchanged images, long replies: drawn at the declared size."""
    grey = torch.rand(1, 12, 20)
    one = [Shown(clean=grey, altered=grey, header="true: a", clean_text="pred: a", altered_text="pred: b",
                 altered_bad=True)]
    three = one + [Shown(clean=torch.rand(3, 12, 20), altered=torch.rand(3, 12, 20))] * 2
    for n, examples in ((1, one), (3, three)):
        path = example_grid(tmp_path / f"g{n}.png", examples, title="t " * 200)
        w, h = grid_size(n, 3)
        assert _size(path) == (round(w * DPI), round(h * DPI)) and is_ours(path)
    long = "word " * 300
    replies = [Reply(clean=grey, altered=grey, question=long, reference=long, clean_reply=long, altered_reply="",
                     altered_bad=True, score="accuracy 1 -> 0")]
    w, h = reply_grid_size(1)
    assert _size(reply_grid(tmp_path / "r.png", replies, title="x")) == (round(w * DPI), round(h * DPI))


def test_a_failing_picture_leaves_the_record_written_and_a_users_file_alone(tmp_path):
    def broken(path):
        raise ValueError("matplotlib said no")

    (tmp_path / "mine.png").write_bytes(b"my own picture")
    ok = Picture("ok.png", lambda p: example_grid(p, [Shown(clean=np.zeros((2, 2)), altered=np.ones((2, 2)))],
                                                  title="ok"))
    mine = Picture("mine.png", lambda p: example_grid(p, [Shown(clean=np.zeros((2, 2)), altered=np.zeros((2, 2)))],
                                                      title="mine"))
    rec = write_record(tmp_path, Record(kind="toy", metrics={"acc": 0.5}, plots=["given.png"],
                                        pictures=[Picture("bad.png", broken), ok, mine]))
    assert rec["metrics"] == {"acc": 0.5} and rec["files"]["plots"] == ["given.png", "ok.png"]
    assert [f["name"] for f in rec["files"]["pictures_failed"]] == ["bad.png", "mine.png"]
    assert "matplotlib said no" in rec["files"]["pictures_failed"][0]["error"]
    assert (tmp_path / "mine.png").read_bytes() == b"my own picture" and not list(tmp_path.glob(".*tmp"))
    with pytest.raises(ValueError, match="plain .png"):
        Picture("../x.png", broken)


def test_example_keeper_prefers_flips_in_a_seeded_order_whatever_the_batches():
    from mmrobust.eval.robust_pictures import ExampleKeeper

    n = 10
    ids = list(range(100, 100 + n))
    x = torch.full((n, 3, 4, 4), 0.9)  # clean: class 0 (bright); attacked flipped ones: class 1 (dark)
    flipped = [i % 3 == 0 for i in range(n)]
    x_adv = torch.stack([torch.full((3, 4, 4), 0.1 if f else 0.85) for f in flipped])
    y = torch.zeros(n, dtype=torch.long)

    def logits(z):
        m = z.flatten(1).mean(1)
        return torch.stack([m - 0.5, 0.5 - m], 1)

    kept = []
    for cuts in ([0, n], [0, 3, 7, n], [0, 1, 2, 5, n]):
        keeper = ExampleKeeper(4 / 255, n=5, seed=3)
        for a, b in zip(cuts, cuts[1:]):
            chunk = {"ids": ids[a:b], "clean": [True] * (b - a), "robust": [not f for f in flipped[a:b]]}
            keeper.offer(4 / 255, chunk, x[a:b], y[a:b], x_adv[a:b], logits, "cpu")
        kept.append([e["index"] for e in keeper.examples()])
    assert kept[0] == kept[1] == kept[2] and len(kept[0]) == 5
    assert [flipped[i - 100] for i in kept[0]] == [True] * 4 + [False]  # all 4 flips first
    e = keeper.examples()[0]
    assert (e["pred"], e["pred_adv"], e["label"]) == (0, 1, 0) and torch.equal(e["x_adv"], x_adv[e["index"] - 100])


def test_eval_robust_and_backdoor_records_draw_their_pictures_and_the_report_embeds_them(tmp_path, micro_world):
    from mmrobust.eval.backdoor import trigger_generator
    from mmrobust.eval.backdoor_pictures import choose_rows
    from mmrobust.data.poison.triggers import make_trigger
    from mmrobust.eval.robust import RobustSettings
    from mmrobust.models import create_clip, save_clip
    from mmrobust.pipelines.evaluate import EvalData, eval_backdoor, eval_robust
    from mmrobust.reports.html import write_report

    save_clip(create_clip("mmrobust-micro", seed=0), tmp_path / "m")
    data = EvalData(str(micro_world.test_manifest), str(micro_world.classes))
    runs = []
    for name, eps in (("a", (2 / 255, 4 / 255)), ("b", (8 / 255,))):
        m = eval_robust(model=str(tmp_path / "m"), data=data, out_dir=tmp_path / name, settings=RobustSettings(
            attack="pgd", eps=eps, n_samples=4, attack_options={"steps": 2}, batch_size=3, check=False))
        rec = read_json(tmp_path / name / "results_robust.json")
        assert rec["files"]["plots"] == ["robust_curve.png", "robust_examples.png"] and rec["metrics"] == m
        w, h = grid_size(4, 3)  # 4 sampled images: all shown
        assert _size(tmp_path / name / "robust_examples.png") == (round(w * DPI), round(h * DPI))
        runs.append(tmp_path / name)
    trig = {"size": 4, "pattern": "checkerboard", "location": "bottom_right"}
    eval_backdoor(model=str(tmp_path / "m"), data=data, out_dir=tmp_path / "bd", trigger="badnet",
                  trigger_params=trig, target="star")
    rec = read_json(tmp_path / "bd" / "results_backdoor.json")
    assert rec["files"]["plots"] == ["backdoor_examples.png", "backdoor_trigger.png"]
    w, h = grid_size(6, 3)
    assert _size(tmp_path / "bd" / "backdoor_examples.png") == (round(w * DPI), round(h * DPI))
    rows = [json.loads(line) for line in (tmp_path / "bd" / "samples_backdoor.jsonl").read_text().splitlines()]
    star = json.loads(micro_world.classes.read_text())["classnames"].index("star")
    chosen = choose_rows(rows, target=star, n=6, seed=0)
    assert len(chosen) == 6 and all(r["label"] != star for r in chosen)
    from mmrobust.data.datasets import ClassInfo, LabelledDataset

    ds = LabelledDataset(data.manifest, classes=ClassInfo.load(data.classes), image_size=16, preload=True)
    x = ds[chosen[0]["index"]]["image"]  # the evaluation's own triggered image: same trigger, same stream
    t = make_trigger("badnet", **trig)(x, generator=trigger_generator(0, chosen[0]["index"]))
    assert torch.equal(t[:, -4:, -4:], make_trigger("badnet", **trig)(torch.zeros(1, 3, 16, 16))[0, :, -4:, -4:])

    one = write_report(runs[:1], tmp_path / "one.html").read_text()
    both = write_report([*runs, tmp_path / "bd"], tmp_path / "all.html").read_text()
    assert one.count("<img") == 2 and "across runs" not in one
    assert both.count("<img") == 2 + 2 + 2 + 1 and "Robust accuracy across runs" in both  # + the cross-run curve


def test_poison_writes_a_trigger_preview_and_never_replaces_a_users_file(tmp_path, micro_world, capsys):
    from mmrobust.cli.main import main

    argv = ["poison", "--manifest", str(micro_world.train_manifest), "--target", "star", "--count", "3"]
    assert main([*argv, "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert f"trigger preview: {tmp_path / 'p' / 'trigger.png'}" in out and is_ours(tmp_path / "p" / "trigger.png")
    w, h = _size(tmp_path / "p" / "trigger.png")
    assert w > h > 0  # clean row, poisoned row, change, trigger on grey: side by side
    assert main([*argv, "--out", str(tmp_path / "p"), "--overwrite"]) == 0  # ours: redrawn
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "trigger.png").write_bytes(b"mine")
    assert main([*argv, "--out", str(tmp_path / "q")]) == 0
    assert "no trigger preview" in capsys.readouterr().out and (tmp_path / "q" / "trigger.png").read_bytes() == b"mine"
