"""Bad input gets a one-line error naming the fix (exit 2), never a traceback."""
from __future__ import annotations

import pytest

from mmrobust.cli.main import main


@pytest.fixture()
def world_paths(tiny_world):
    return {"train": str(tiny_world.train_manifest), "test": str(tiny_world.test_manifest),
            "classes": str(tiny_world.classes)}


CASES = [
    (["poison", "--manifest", "{train}", "--out", "{tmp}/p", "--trigger", "badnt", "--target", "star", "--rate", "0.1"],
     "unknown trigger 'badnt' (did you mean 'badnet'?)"),
    (["poison", "--manifest", "{tmp}/missing.csv", "--out", "{tmp}/p", "--target", "star", "--rate", "0.1"],
     "check the --manifest path"),
    (["poison", "--manifest", "{train}", "--out", "{tmp}/p", "--target", "star", "--rate", "0.1",
      "--caption-col", "title"], "title"),
    (["train", "--task", "cleanclp", "--data", "{train}", "--out", "{tmp}/t", "--steps", "2"],
     "unknown task 'cleanclp' (did you mean 'cleanclip'?)"),
    (["train", "--task", "clip", "--data", "{train}", "--out", "{tmp}/t", "--steps", "2", "--caption-col", "text"],
     "--caption-col"),
    (["train", "--task", "par", "--data", "{train}", "--out", "{tmp}/t", "--steps", "2", "--opt", "tua=2"],
     "has no option(s) ['tua']"),
    (["train", "--task", "supervised", "--data", "{train}", "--out", "{tmp}/t", "--steps", "2"], "--classes"),
    (["train", "--task", "clip", "--data", "{train}", "--out", "{tmp}/t", "--steps", "2", "--model", "ViT-Nope"],
     "unknown model 'ViT-Nope'"),
    (["train", "--task", "clip", "--data", "{train}", "--out", "{tmp}/t", "--steps", "2", "--batch-size", "100000"],
     "larger than the dataset"),
    (["train", "--task", "clip", "--data", "{train}", "--out", "{tmp}/t", "--steps", "2", "--config", "{tmp}/bad.yaml"],
     "unknown option(s) ['learning_rate']"),
    (["eval", "backdoor", "--model", "mmrobust-tiny", "--data", "{test}", "--classes", "{classes}", "--out", "{tmp}/e",
      "--trigger", "badnet", "--target", "banana"], "target 'banana' is not a class"),
    (["eval", "zeroshot", "--model", "mmrobust-tiny", "--data", "{test}", "--classes", "{tmp}/nope.json",
      "--out", "{tmp}/e"], "class file"),
    (["eval", "robust", "--model", "mmrobust-tiny", "--data", "{test}", "--classes", "{classes}", "--out", "{tmp}/e",
      "--attack", "fgsm"], "unknown attack 'fgsm'"),
    (["report", "{tmp}/no-such-run"], "not found"),
    (["mmr", "run", "--data", "{tmp}", "--adapter", "scripted", "--model", "always-a", "--out", "{tmp}/m",
      "--max-new-tokens", "1000000000"], "max_new_tokens must be an integer in [1, 4096]"),
    (["demo", "--out", "{tmp}/d", "--story", "backdoor", "--set", "backdoor.finetune_rl=1e-3"],
     "use key=value with a key among"),
    (["demo", "--out", "{tmp}/d", "--story", "backdoor", "--set", "backdoor.finetune_lr=fast"], "expected a float"),
    (["demo", "--out", "{tmp}/d", "--story", "backdoor", "--set", "mmr.seed=1"], "prefix the key with a story"),
]


@pytest.mark.parametrize("argv,expected", CASES, ids=[c[0][0] + "-" + str(i) for i, c in enumerate(CASES)])
def test_bad_input_is_one_line(argv, expected, tmp_path, world_paths, capsys):
    (tmp_path / "bad.yaml").write_text("learning_rate: 0.1\n")
    args = [a.format(tmp=tmp_path, **world_paths) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("eps", ["four", "4", "1/0"])
def test_bad_eps_is_rejected_by_the_parser(eps, world_paths, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "robust", "--model", "mmrobust-tiny", "--data", world_paths["test"], "--classes",
              world_paths["classes"], "--out", str(tmp_path), "--eps", eps])
    assert e.value.code == 2
    assert "eps" in capsys.readouterr().err
