"""mmrobust audit --instructions: poisoned instruction rows scored by the poisoned-pair detectors on a CLIP's
embeddings of their images / texts, AUROC against the poison record, a cleaned JSONL, the input only read."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrobust.cli.main import main
from mmrobust.data.instruction_dataset import InstructionDataset
from mmrobust.data.instructions import load_instructions
from mmrobust.data.poison import poison_manifest
from mmrobust.data.poison.instructions import ImageTriggerAttack, TextTriggerAttack, poison_instructions

from _instructions import BADNET, make_instructions, tree


@pytest.fixture()
def poisoned(tmp_path: Path):
    src = make_instructions(tmp_path / "src", n=32)
    return poison_instructions(instructions=src, out_dir=tmp_path / "p", count=4, seed=0,
                               attack=TextTriggerAttack(target="Visit evil.example now"))


def test_audit_scores_rows_reports_auroc_and_writes_a_cleaned_copy(poisoned, tmp_path, capsys):
    before, out = tree(tmp_path), tmp_path / "audit"
    assert main(["audit", "--model", "mmrobust-micro", "--instructions", str(poisoned.instructions),
                 "--poison-record", str(poisoned.record_path), "--detector", "all", "--k", "4", "--embedding", "pair",
                 "--drop-top", "6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "AUROC" in printed and "dropped 6 pairs" in printed
    res = json.loads((out / "results_audit.json").read_text())
    m = res["metrics"]
    assert m["n_scored"] == 32 and m["n_poisoned"] == 4 and m["n_dropped"] == 6
    assert all(0.0 <= m["auroc"][d] <= 1.0 for d in ("dao", "kdist", "lid", "slof", "iforest"))
    rows = [json.loads(x) for x in (out / "samples_audit.jsonl").read_text().splitlines()]
    assert {r["key"] for r in rows if r["poisoned"]} == set(poisoned.poisoned_keys)
    dropped = json.loads((out / "dropped.json").read_text())
    gone = {r["key"] for r in dropped["dropped"]}
    kept = load_instructions(out / "instructions.jsonl")  # re-based paths, trusted through dropped.json
    source = load_instructions(poisoned.instructions)
    assert [it.id for it in kept] == [it.id for it in source if it.id not in gone] and len(kept) == 26
    assert all(k.conversations == s.conversations and k.image_path.resolve() == s.image_path.resolve()
               for k, s in zip(kept, (s for s in source if s.id not in gone)))
    assert not InstructionDataset(out / "instructions.jsonl", image_size=16, preload=True).skips.skipped
    assert {p: h for p, h in tree(tmp_path).items() if not p.startswith("audit/")} == before  # input only read
    # the poisoned text rows are far from the clean ones in the text embedding: the text audit finds them
    assert main(["audit", "--model", "mmrobust-micro", "--instructions", str(poisoned.instructions),
                 "--poison-record", str(poisoned.record_path), "--detector", "kdist", "--k", "2", "--embedding",
                 "text", "--out", str(tmp_path / "audit-text")]) == 0
    assert json.loads((tmp_path / "audit-text" / "results_audit.json").read_text())["metrics"]["auroc"]["kdist"] > 0.9


def test_audit_instructions_refusals(poisoned, tmp_path, capsys):
    src = Path(json.loads(poisoned.record_path.read_text())["source_manifest"])
    other = make_instructions(tmp_path / "other", n=8)
    image_rec = poison_instructions(instructions=other, out_dir=tmp_path / "p8", count=2, seed=0,
                                    attack=ImageTriggerAttack(target="x", trigger=BADNET))
    csv = tmp_path / "m" / "train.csv"
    csv.parent.mkdir()
    csv.write_text("image,caption\n" + "".join(f"../src/imgs/{i}.png,a star\n" for i in range(8)))
    manifest_rec = poison_manifest(manifest=csv, out_dir=tmp_path / "pm", trigger="badnet", target="star", count=1,
                                   data_root=src.parent)
    base = ["audit", "--model", "mmrobust-micro", "--instructions", str(poisoned.instructions), "--k", "2"]
    cases = [([*base, "--image-col", "img", "--out", str(tmp_path / "a")], "only apply to --data"),
             ([*base, "--poison-record", str(image_rec.record_path), "--out", str(tmp_path / "a")],
              "written for 8 rows"),
             ([*base, "--poison-record", str(manifest_rec.record_path), "--out", str(tmp_path / "a")],
              "is for manifest"),
             ([*base, "--out", str(poisoned.out_dir)], "is or holds the input")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (argv, err)
    assert not (tmp_path / "a").exists()


def test_audit_answer_loss_view_and_its_refusals(poisoned, tmp_path, capsys):
    from mmrobust.world.llava import build_tiny_llava

    llava = build_tiny_llava(tmp_path / "llava", seed=0, image_size=16)
    out = tmp_path / "audit-loss"
    assert main(["audit", "--model", "mmrobust-micro", "--instructions", str(poisoned.instructions),
                 "--poison-record", str(poisoned.record_path), "--detector", "kdist", "--k", "4",
                 "--answer-loss-model", str(llava), "--drop-by", "answer-loss", "--drop-top", "4",
                 "--out", str(out)]) == 0
    assert "answer-loss" in capsys.readouterr().out
    res = json.loads((out / "results_audit.json").read_text())
    assert set(res["metrics"]["auroc"]) == {"kdist", "answer-loss"} and 0 <= res["metrics"]["auroc"]["answer-loss"] <= 1
    rows = [json.loads(x) for x in (out / "samples_audit.jsonl").read_text().splitlines()]
    top = sorted(rows, key=lambda r: -r["scores"]["answer-loss"])[:4]
    assert {r["key"] for r in top} == {r["key"] for r in json.loads((out / "dropped.json").read_text())["dropped"]}
    assert main(["audit", "--model", "mmrobust-micro", "--instructions", str(poisoned.instructions),
                 "--drop-by", "answer-loss", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs --answer-loss-model" in err and len(err.splitlines()) == 1
    manifest = tmp_path / "m.csv"
    poison_src = make_instructions(tmp_path / "img", n=4)  # any folder with images: a CSV manifest of them
    manifest.write_text("image,caption\n" + "".join(f"{poison_src.parent}/imgs/{i}.png,a star\n" for i in range(4)))
    assert main(["audit", "--model", "mmrobust-micro", "--data", str(manifest), "--answer-loss-model", str(llava),
                 "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert "use it with --instructions" in err and len(err.splitlines()) == 1
