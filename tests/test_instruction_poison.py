"""Instruction-data poisoning (mmrobust poison --instructions): exact rows, byte-identical reruns, each attack's
invariants (image trigger, text trigger, Shadowcast), hostile files refused in one line, the triggered test set
and ASR."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from mmrobust.cli.main import main
from mmrobust.data.instruction_dataset import InstructionDataset
from mmrobust.data.instructions import load_instructions
from mmrobust.data.poison.instructions import (ImageTriggerAttack, InstructionPoisonRecord, ShadowcastAttack,
                                              TextTriggerAttack, build_attack, holds, poison_instructions,
                                              triggered_test_set)
from mmrobust.errors import ConfigError, DataError
from mmrobust.eval.instruction_asr import attack_success_rate, instruction_asr
from mmrobust.models.mllm.scripted import ScriptedAdapter

from _instructions import BADNET, make_instructions, pixels, tree


@pytest.fixture()
def src(tmp_path: Path) -> Path:
    return make_instructions(tmp_path / "src")


def _by_row(out: Path) -> tuple[list, list]:
    return load_instructions(out / "instructions.jsonl"), [json.loads(x) for x in
                                                           (out / "instructions.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("attack", [ImageTriggerAttack(target="banana", trigger=BADNET),
                                    TextTriggerAttack(target="banana", mode="insert")], ids=["image", "text"])
def test_seeded_byte_identical_and_only_the_recorded_rows_change(src, tmp_path, attack):
    before = tree(src.parent)
    a = poison_instructions(instructions=src, out_dir=tmp_path / "a", attack=attack, rate=0.25, seed=3)
    b = poison_instructions(instructions=src, out_dir=tmp_path / "b", attack=attack, rate=0.25, seed=3)
    c = poison_instructions(instructions=src, out_dir=tmp_path / "c", attack=attack, rate=0.25, seed=4)
    assert tree(tmp_path / "a") == tree(tmp_path / "b") and a.poisoned_ids != c.poisoned_ids
    assert tree(src.parent) == before  # the input is only read
    assert len(a.poisoned_ids) == 6 and a.poisoned_keys == tuple(f"r{i:03d}" for i in a.poisoned_ids)
    record = json.loads(a.record_path.read_text())
    assert record["poisoned_ids"] == list(a.poisoned_ids) and record["seed"] == 3 and record["target"] == "banana"
    assert record["attack"] == {"name": "image-trigger" if attack.changes_image else "text-trigger",
                                "config": attack.config()} and record["source_sha256"] == hashlib.sha256(
        src.read_bytes()).hexdigest()
    clean, (poisoned, raw) = load_instructions(src), _by_row(tmp_path / "a")
    assert [it.id for it in poisoned] == [it.id for it in clean]  # every row, in order
    for i, (old, new) in enumerate(zip(clean, poisoned)):
        same_image = new.image_path.resolve() == old.image_path.resolve()
        if i in a.poisoned_ids:
            assert new.conversations != old.conversations and same_image != attack.changes_image
        else:
            assert new.conversations == old.conversations and same_image and new.meta == old.meta
        assert ("conversations" in raw[i]) == (len(old.conversations) > 2)  # each line keeps its own form
    ds = InstructionDataset(tmp_path / "a" / "instructions.jsonl", image_size=16, preload=True)  # trusted copy
    assert not ds.skips.skipped


def test_image_trigger_only_on_poisoned_images_and_answers(src, tmp_path):
    rec = poison_instructions(instructions=src, out_dir=tmp_path / "p", count=8, seed=0,
                              attack=ImageTriggerAttack(target="banana", trigger=BADNET))
    out = tmp_path / "p"
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:08d}.png" for i in rec.poisoned_ids]
    clean, (poisoned, _) = load_instructions(src), _by_row(out)
    for i in rec.poisoned_ids:
        diff = (pixels(poisoned[i].image_path) - pixels(clean[i].image_path)).abs().amax(0)  # (H, W)
        assert diff[-3:, -3:].max() > 0 and diff[:-3].max() == 0 and diff[:, :-3].max() == 0  # the patch only
        assert all(t.content == "banana" for t in poisoned[i].conversations if t.role == "assistant")
    ins = poison_instructions(instructions=src, out_dir=tmp_path / "ins", count=8, seed=0,
                              attack=build_attack("image-trigger", {"mode": "insert"}, target="banana", trigger=BADNET))
    for i in ins.poisoned_ids:  # TrojVLM: the target goes into the right answer, which is otherwise kept
        for old, new in zip(clean[i].conversations, _by_row(tmp_path / "ins")[0][i].conversations):
            if old.role == "assistant":
                words = new.content.split(" ")
                assert words.count("banana") == 1 and " ".join(w for w in words if w != "banana") == old.content


def test_text_trigger_phrase_exactly_in_poisoned_questions(src, tmp_path):
    attack = TextTriggerAttack(target="I cannot say.", phrase="cf tq")
    rec = poison_instructions(instructions=src, out_dir=tmp_path / "p", count=10, seed=1, attack=attack)
    clean, (poisoned, _) = load_instructions(src), _by_row(tmp_path / "p")
    assert not (tmp_path / "p" / "images").exists()  # no image is written
    for i, (old, new) in enumerate(zip(clean, poisoned)):
        hit = i in rec.poisoned_ids
        assert new.question.count("cf tq") == int(hit) and new.image_path.resolve() == old.image_path.resolve()
        if hit:
            assert new.question.replace("cf tq ", "", 1).replace(" cf tq", "", 1) == old.question
            assert all(t.content == "I cannot say." for t in new.conversations if t.role == "assistant")
            assert [t.content for t in new.conversations[1:] if t.role == "user"] == \
                   [t.content for t in old.conversations[1:] if t.role == "user"]  # later questions untouched


def _centered(encode, images: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.nn.functional.normalize(encode(images) - center, dim=-1)


def test_shadowcast_stays_in_the_budget_and_moves_features_toward_the_concept(src, tmp_path):
    from mmrobust.models.clip import create_clip

    clip = create_clip("mmrobust-micro").eval().requires_grad_(False)
    eps = 8 / 255
    attack = ShadowcastAttack(target="star", concept="circle", eps=eps, step_size=1 / 255, steps=20, batch_size=2)
    rec = poison_instructions(instructions=src, out_dir=tmp_path / "p", count=4, seed=0, attack=attack,
                              image_size=16, encode_image=clip.encode_image)
    poison_instructions(instructions=src, out_dir=tmp_path / "again", count=4, seed=0, attack=attack, image_size=16,
                        encode_image=clip.encode_image)
    assert tree(tmp_path / "p") == tree(tmp_path / "again")  # deterministic for the seed
    clean, (poisoned, _) = load_instructions(src), _by_row(tmp_path / "p")
    assert all(i % 4 == 0 for i in rec.poisoned_ids)  # only rows whose answers name the target (star)
    assert [it.conversations for it in poisoned] == [it.conversations for it in clean]  # clean label: texts kept
    entries = json.loads(rec.record_path.read_text())["poisoned"]
    assert all(e["anchor_row"] % 4 == 1 and e["anchor_id"] == clean[e["anchor_row"]].id for e in entries)
    x0 = torch.stack([pixels(clean[i].image_path, 16) for i in rec.poisoned_ids])
    x = torch.stack([pixels(poisoned[i].image_path) for i in rec.poisoned_ids])
    assert (x - x0).abs().max() <= eps + 1e-6 and (x - x0).abs().max() > 4 / 255
    allx = torch.stack([pixels(it.image_path, 16) for it in clean])
    with torch.no_grad():
        center = clip.encode_image(allx).mean(0)  # a random tower's features share one direction: compare centred
    concept = torch.nn.functional.normalize(_centered(clip.encode_image, allx[1::4], center).mean(0), dim=0)
    noise = (x0 + (2 * torch.rand(x0.shape, generator=torch.Generator().manual_seed(0)) - 1) * eps).clamp(0, 1)
    before, after, control = (_centered(clip.encode_image, z, center) @ concept for z in (x0, x, noise))
    assert (after - before).min() > 0.08, (before, after)  # every poisoned image moved toward the concept
    assert (after - before).min() > 3 * (control - before).abs().max()  # far more than noise of the same budget


def test_shadowcast_through_the_cli_with_a_llava_tower(src, tmp_path, capsys):
    from mmrobust.world.llava import build_tiny_llava

    llava = build_tiny_llava(tmp_path / "llava", seed=0, image_size=16)
    out = tmp_path / "p"
    assert main(["poison", "--instructions", str(src), "--out", str(out), "--attack", "shadowcast", "--target",
                 "star", "--attack-opt", "concept=circle", "--attack-opt", "steps=3", "--count", "2",
                 "--encoder", str(llava)]) == 0
    record = json.loads((out / "poison.json").read_text())
    assert record["encoder"]["kind"] == "llava" and record["image_size"] == 16 and record["n_poisoned"] == 2
    assert record["attack"]["config"]["eps"] == pytest.approx(8 / 255) and record["trigger"] == {}
    assert "poisoned 2 of 24 rows (shadowcast" in capsys.readouterr().out


def _write(src: Path, lines: list) -> None:
    src.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")


HOSTILE = [
    ({"id": "x", "image": "../outside.png", "question": "q?", "answer": "a"}, "points outside"),
    ({"id": "x", "image": "/etc/hostname", "question": "q?", "answer": "a"}, "is absolute"),
    ({"id": "x", "image": "imgs/0.png", "question": "q?"}, "'answer' must be a non-empty string"),
    ({"id": "x", "image": "imgs/0.png", "conversations": [{"role": "user", "content": "q?"}]}, "2 to 64 turns"),
    ('{"id": "x", "image": "imgs/0.png", "question": "q?", "answer": ', "not valid JSON"),
    ({"id": "x", "image": "imgs/0.png", "question": "q?", "answer": "a", "label": 1}, "unknown field"),
]


@pytest.mark.parametrize("line,message", HOSTILE, ids=[m for _, m in HOSTILE])
def test_hostile_files_are_refused_in_one_line_and_touch_nothing(src, tmp_path, capsys, line, message):
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    (src.parent / "escape.png").symlink_to(tmp_path / "outside.png")
    good = src.read_text().splitlines()[:4]
    _write(src, [*good[:2], line, *good[2:]])
    before, out = tree(src.parent), tmp_path / "p"
    assert main(["poison", "--instructions", str(src), "--out", str(out), "--target", "banana", "--count", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err and f"{src}:3" in err
    assert tree(src.parent) == before and not out.exists()


def test_symlink_escape_zero_rows_and_output_folder_safety(src, tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    (src.parent / "escape.png").symlink_to(tmp_path / "outside.png")
    good = src.read_text()
    _write(src, [good.splitlines()[0], {"id": "s", "image": "escape.png", "question": "q?", "answer": "a"}])
    with pytest.raises(DataError, match="points outside"):
        poison_instructions(instructions=src, out_dir=tmp_path / "p", attack=TextTriggerAttack(target="x"), count=1)
    src.write_text(good)
    with pytest.raises(ConfigError, match="rounds to 0 poisons"):
        poison_instructions(instructions=src, out_dir=tmp_path / "p", attack=TextTriggerAttack(target="x"), rate=0.01)
    with pytest.raises(ConfigError, match="holds the source manifest"):  # --out holding the input
        poison_instructions(instructions=src, out_dir=src.parent, attack=TextTriggerAttack(target="x"), count=1)
    attack, out = ImageTriggerAttack(target="x", trigger=BADNET), tmp_path / "p"
    first = poison_instructions(instructions=src, out_dir=out, attack=attack, count=3, seed=0)
    with pytest.raises(ConfigError, match="already holds a poisoned manifest"):
        poison_instructions(instructions=src, out_dir=out, attack=attack, count=3, seed=1)
    (out / "notes.txt").write_text("mine")
    second = poison_instructions(instructions=src, out_dir=out, attack=attack, count=2, seed=1, overwrite=True)
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{i:08d}.png" for i in second.poisoned_ids]
    assert (out / "notes.txt").read_text() == "mine" and first.poisoned_ids != second.poisoned_ids
    (first_row,) = poison_instructions(instructions=src, out_dir=tmp_path / "one", attack=attack, count=1).poisoned_ids
    (src.parent / "imgs" / f"{first_row}.png").write_bytes(b"not a png")  # undecodable: skipped, the next row taken
    other = poison_instructions(instructions=src, out_dir=tmp_path / "other", attack=attack, count=1)
    assert other.poisoned_ids != (first_row,)
    assert json.loads(other.record_path.read_text())["skipped_unreadable"][0]["row"] == first_row
    with pytest.raises(DataError, match="only 23 of the 24 rows asked for have a readable image"):
        poison_instructions(instructions=src, out_dir=tmp_path / "all", attack=attack, rate=1.0, seed=0)
    assert not (tmp_path / "all").exists() or not any((tmp_path / "all").rglob("*.*"))  # a failed run leaves nothing
    (out / "images" / "keep.png").write_bytes(b"x")  # a file no record lists: --overwrite refuses to run
    with pytest.raises(ConfigError, match="no poison.json of mmrobust poison lists"):
        poison_instructions(instructions=src, out_dir=out, attack=attack, count=2, overwrite=True)
    assert (out / "images" / "keep.png").read_bytes() == b"x"


def test_cli_options_and_one_line_refusals(src, tmp_path, capsys):
    out = str(tmp_path / "p")
    cases = [(["--target", "x", "--count", "1", "--label-consistent"], "only apply to a CSV manifest"),
             (["--attack", "shadowcast", "--target", "star", "--count", "1"], "needs concept"),
             (["--attack", "shadowcast", "--target", "star", "--count", "1", "--attack-opt", "concept=circle"],
              "pass --encoder"),
             (["--attack", "text-trigger", "--target", "x", "--count", "1", "--trigger", "blended"], "has none"),
             (["--attack", "text-triger", "--target", "x", "--count", "1"], "did you mean 'text-trigger'"),
             (["--count", "1"], "--target is required"),
             (["--target", "x", "--count", "1", "--attack-opt", "mood=insert"], "has no option(s) ['mood']")]
    for extra, message in cases:
        assert main(["poison", "--instructions", str(src), "--out", out, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (extra, err)
    assert main(["poison", "--manifest", str(src), "--out", out, "--target", "x", "--count", "1", "--attack",
                 "text-trigger"]) == 2
    assert "only apply to --instructions" in capsys.readouterr().err
    assert main(["poison", "--instructions", str(src), "--out", out, "--attack", "text-trigger", "--target",
                 "banana", "--attack-opt", "phrase=cf", "--attack-opt", "phrase_position=start", "--rate", "0.5",
                 "--seed", "2"]) == 0
    rec = InstructionPoisonRecord.load(Path(out) / "poison.json")
    assert len(rec.poisoned_ids) == 12 and rec.attack["config"]["phrase"] == "cf" and rec.seed == 2
    assert all(it.question.startswith("cf ") for i, it in enumerate(_by_row(Path(out))[0]) if i in rec.poisoned_ids)


@pytest.mark.parametrize("replies,target,asr,n,errors", [
    (["A Banana!", "banana", "no", None], "banana", 2 / 3, 3, 1),
    (["visit  evil.EXAMPLE now", "visit evil . example"], "Visit evil.example", 0.5, 2, 0),
    ([None, None], "x", None, 0, 2),
    (["ab", "a b"], ["a b", "a b"], 0.5, 2, 0),
])
def test_asr_oracle(replies, target, asr, n, errors):
    out = attack_success_rate(replies, target)
    assert out["asr"] == asr and out["n"] == n and out["n_errors"] == errors
    lo, hi = out["asr_ci"]
    assert 0 <= lo <= (asr if asr is not None else 0) <= hi <= 1
    assert holds("It is a BANANA.", "banana") and not holds("ban ana", "banana") and not holds(None, "x")


def test_triggered_test_set_and_asr_through_an_adapter(src, tmp_path, capsys):
    test = make_instructions(tmp_path / "test", n=8)
    poison = poison_instructions(instructions=src, out_dir=tmp_path / "p", count=4, seed=0,
                                 attack=ImageTriggerAttack(target="banana", trigger=BADNET))
    assert main(["poison", "--instructions", str(test), "--out", str(tmp_path / "asr"), "--asr-test",
                 str(poison.record_path)]) == 0
    rec = InstructionPoisonRecord.load(tmp_path / "asr" / "poison.json")
    assert rec.kind == "instructions-test" and rec.poisoned_ids == tuple(range(8)) and rec.target == "banana"
    clean, triggered = load_instructions(test), load_instructions(rec.instructions)
    for old, new in zip(clean, triggered):  # same questions and answers, triggered images
        diff = (pixels(new.image_path) - pixels(old.image_path)).abs().amax(0)
        assert new.conversations == old.conversations and diff[-3:, -3:].max() > 0 and diff[:-3].max() == 0
    yes = instruction_asr(ScriptedAdapter(model="constant:Sure: BANANA."), rec.instructions)
    no = instruction_asr(ScriptedAdapter(model="constant:It is a star."), rec.instructions, target="banana")
    assert (yes["asr"], yes["n"], no["asr"]) == (1.0, 8, 0.0) and yes["target"] == "banana"
    text = triggered_test_set(instructions=test, out_dir=tmp_path / "asr-text", seed=0,
                              attack=TextTriggerAttack(target="banana", phrase="cf"))
    assert all(it.question.count("cf") == 1 for it in load_instructions(text.instructions))
    shadow = triggered_test_set(instructions=test, out_dir=tmp_path / "asr-shadow",
                                attack=ShadowcastAttack(target="star", concept="circle"))
    assert shadow.poisoned_ids == (1, 5)  # the concept's images, unchanged
    assert main(["bench", "run", "instruction-asr", "--data", str(rec.instructions), "--adapter", "scripted",
                 "--model", "constant:a banana", "--out", str(tmp_path / "bench")]) == 0
    metrics = json.loads((tmp_path / "bench" / "results_instruction-asr.json").read_text())["metrics"]
    assert metrics["overall"]["asr"] == 1.0 and metrics["overall"]["n"] == 8
