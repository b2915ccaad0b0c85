"""Published robust CLIPs load by name (FARE/TeCoA open_clip hub repos, LEAF transformers CLIPModel repos,
Delta-CLIP), from a local folder and as ``hf-hub:ORG/NAME`` from an offline hub cache, for evaluation and for
``lvlm swap``. The stand-ins are tiny models in each repo's exact file layout (tests/_robust_towers.py)."""
from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from transformers import AutoModelForImageTextToText
from transformers import CLIPModel as HFCLIPModel

import _robust_towers as rt
from mmrobust.cli.main import main
from mmrobust.errors import ConfigError
from mmrobust.lvlm import convert_clip_vision, hf_vision_model, swap_and_save
from mmrobust.models.clip import create_clip, save_clip
from mmrobust.world.llava import build_tiny_llava

ATOL = 1e-5
FARE, LEAF, LEAF_G, DELTA = ("chs20/fare2-clip", "LEAF-CLIP/CLIP-ViT-L-rho50-k1-constrained-FARE2",
                             "LEAF-CLIP/CLIP-ViT-g-rho50-k1-constrained-FARE2", "zw123/delta_clip_h14_336")
TEXTS = ["a photo of a star.", "a red circle", "the blue square shape"]


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("repos")
    return {FARE: rt.fare_repo(root / "fare"), LEAF: rt.leaf_repo(root / "leaf"),
            LEAF_G: rt.leaf_repo(root / "leaf-g", sharded=True), DELTA: rt.delta_repo(root / "delta")}


@pytest.fixture()
def hub(repos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An offline hub cache holding the four repos."""
    cache = tmp_path / "hub"
    for repo_id, folder in repos.items():
        rt.put_in_hub_cache(cache, repo_id, folder)
    rt.offline_hub(monkeypatch, cache)
    return cache


def _images(size: int, n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _features(clip) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return clip.encode_image(_images(clip.image_size)), clip.encode_text(clip.tokenize(TEXTS))


@pytest.mark.parametrize("repo_id", [FARE, DELTA])
def test_open_clip_hub_repos_load_by_name_as_open_clip_loads_them(repos, hub, repo_id: str) -> None:
    ours = create_clip(f"hf-hub:{repo_id}")
    ref, _, _ = open_clip.create_model_and_transforms(f"local-dir:{repos[repo_id]}")  # open_clip's own loader
    ref_tok = open_clip.get_tokenizer(f"local-dir:{repos[repo_id]}")
    img, txt = _features(ours)
    with torch.no_grad():
        torch.testing.assert_close(img, ref.eval().encode_image(ours.normalize_pixels(_images(ours.image_size))),
                                   atol=ATOL, rtol=ATOL)
        torch.testing.assert_close(txt, ref.encode_text(ref_tok(TEXTS)), atol=ATOL, rtol=ATOL)
    local = create_clip(str(repos[repo_id]))  # the same files as a plain folder
    torch.testing.assert_close(_features(local)[0], img)
    want = rt.OPENAI if repo_id == FARE else rt.IMAGENET
    torch.testing.assert_close(ours.mean.flatten(), torch.tensor(want["mean"]))
    if repo_id == DELTA:  # the repo's own WordPiece files, not a download of bert-base-uncased
        assert type(ours.tokenizer).__name__ == "HFTokenizer" and int(ours.tokenize(["star"]).max()) < 20


@pytest.mark.parametrize("repo_id", [LEAF, LEAF_G])
def test_leaf_clipmodel_repos_load_exactly_as_transformers_computes_them(repos, hub, repo_id: str) -> None:
    ours = create_clip(f"hf-hub:{repo_id}")
    ref = HFCLIPModel.from_pretrained(repos[repo_id]).eval()
    img, txt = _features(ours)
    with torch.no_grad():
        want_img = ref.get_image_features(pixel_values=ours.normalize_pixels(_images(ours.image_size)))
        want_txt = ref.get_text_features(input_ids=ours.tokenize(TEXTS))
    torch.testing.assert_close(img, getattr(want_img, "pooler_output", want_img), atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(txt, getattr(want_txt, "pooler_output", want_txt), atol=ATOL, rtol=ATOL)
    torch.testing.assert_close(ours.logit_scale, ref.logit_scale.exp())
    assert ours.model_cfg["quick_gelu"] is True  # LEAF's ViT-L config leaves hidden_act at its default
    torch.testing.assert_close(ours.mean.flatten(), torch.tensor(rt.OPENAI["mean"]))  # no processor in the repo


def test_a_leaf_model_saved_by_mmrobust_reloads_as_an_open_clip_folder(repos, tmp_path: Path) -> None:
    clip = create_clip(str(repos[LEAF]))
    saved = save_clip(clip, tmp_path / "model")
    assert (saved / "open_clip_config.json").is_file()
    for a, b in zip(_features(clip), _features(create_clip(str(saved)))):
        torch.testing.assert_close(a, b)


def test_hub_errors_are_one_line(repos, hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as e:
        create_clip("hf-hub:nobody/nothing")
    assert "\n" not in str(e.value) and "neither open_clip_config.json" in str(e.value) and "offline" in str(e.value)
    only_config = tmp_path / "cfg-only"
    only_config.mkdir()
    (only_config / "config.json").write_text((repos[LEAF] / "config.json").read_text())
    rt.put_in_hub_cache(hub, "someone/config-only", only_config)
    with pytest.raises(ConfigError, match="no model.safetensors"):
        create_clip("hf-hub:someone/config-only")
    gelu_mix = json.loads((repos[LEAF] / "config.json").read_text())
    gelu_mix["vision_config"]["hidden_act"] = "gelu"  # the text tower keeps quick_gelu: open_clip has one act
    (only_config / "config.json").write_text(json.dumps(gelu_mix))
    with pytest.raises(ConfigError, match="activations 'gelu' .image. / 'quick_gelu' .text."):
        create_clip(str(only_config))


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaVA whose tower has the stand-ins' image-tower architecture (width 96, 3 layers, 3 heads)."""
    return build_tiny_llava(tmp_path_factory.mktemp("lvlm") / "llava", seed=0, image_size=32, patch_size=8,
                            hidden_size=64, num_layers=2, vision_hidden_size=96, vision_layers=3, vision_heads=3,
                            vision_intermediate_size=384, vision_act="quick_gelu")


@pytest.mark.parametrize("repo_id", [FARE, LEAF])
def test_lvlm_swap_takes_robust_towers_by_hub_name(repos, hub, llava_dir: Path, tmp_path: Path, repo_id: str) -> None:
    out = swap_and_save(llava_dir, f"hf-hub:{repo_id}", out_dir=tmp_path / "swapped")
    tower = AutoModelForImageTextToText.from_pretrained(out).model.vision_tower.state_dict()
    want = hf_vision_model(convert_clip_vision(create_clip(str(repos[repo_id]))), projection=False).state_dict()
    assert tower.keys() == want.keys() and all(torch.equal(tower[k], want[k]) for k in want)
    record = json.loads((out / "swap.json").read_text())
    assert record["sources"]["encoder"] == f"hf-hub:{repo_id}" and record["warnings"] == []


def test_lvlm_swap_refuses_delta_clip_in_one_line(hub, llava_dir: Path, tmp_path: Path, capsys) -> None:
    """Delta-CLIP's tower has no ln_pre and pools by average: no exact CLIPVisionModel exists for it."""
    code = main(["lvlm", "swap", "--lvlm", str(llava_dir), "--encoder", f"hf-hub:{DELTA}", "--out",
                 str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "cannot convert this open_clip image tower" in err
    assert not (tmp_path / "x").exists()
