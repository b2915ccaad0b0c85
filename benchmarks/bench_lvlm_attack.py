"""Time and peak memory of APGD on the LM loss of an LVLM (Schlarmann et al. 2024), run by hand.

Random-init weights of the real shapes (the GPU machine has no network): ``--shape llava-1.5-7b`` is a
LLaVA-1.5-7B-shaped model (ViT-L/14 at 336 px, 576 image tokens, a 32-layer width-4096 Llama) in
bf16; ``--shape tiny`` is the offline test LLaVA, to check the script on a CPU. The processor (chat
template, image normalization) comes from the embedded world's tiny LLaVA built at the same image
size and patch. After a warm-up, each batch size runs the attack twice (``--steps`` and one step) so the per-step time
excludes APGD's set-up; both use the same seed.

    python benchmarks/bench_lvlm_attack.py --shape llava-1.5-7b --device cuda --batch 1 8 --steps 5
    python benchmarks/bench_lvlm_attack.py --shape tiny --batch 1 2 --steps 3      # CPU smoke run
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

SHAPES = {  # vision (width, layers, heads, mlp, image, patch), text (width, layers, heads, mlp, vocab)
    "tiny": dict(vision=(64, 2, 4, 128, 32, 8), text=(64, 2, 4, 128, None)),
    "llava-1.5-7b": dict(vision=(1024, 24, 16, 4096, 336, 14), text=(4096, 32, 32, 11008, 32064)),
}


def build(shape: str, device: str, dtype: torch.dtype):
    """(model, processor) of the given shape, random weights."""
    from transformers import AutoProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from mmrobust.world.llava import build_tiny_llava

    (vw, vl, vh, vm, image, patch), (tw, tl, th, tm, vocab) = SHAPES[shape]["vision"], SHAPES[shape]["text"]
    proc_dir = Path(tempfile.mkdtemp()) / "processor"
    build_tiny_llava(proc_dir, image_size=image, patch_size=patch, extra_words=["describe the image a cat"])
    processor = AutoProcessor.from_pretrained(proc_dir)
    tok = processor.tokenizer
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=vw, num_hidden_layers=vl, num_attention_heads=vh,
                                       intermediate_size=vm, image_size=image, patch_size=patch,
                                       hidden_act="quick_gelu"),
        text_config=LlamaConfig(hidden_size=tw, num_hidden_layers=tl, num_attention_heads=th, num_key_value_heads=th,
                                intermediate_size=tm, vocab_size=max(vocab or 0, len(tok)),
                                max_position_embeddings=4096, pad_token_id=tok.pad_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=(image // patch) ** 2,
        vision_feature_select_strategy="default", vision_feature_layer=-2)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlavaForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval(), processor, image


def run_attack(model, processor, image: int, batch: int, steps: int, device: str) -> float:
    """Seconds for one untargeted APGD run of ``steps`` steps at eps 4/255 on ``batch`` images."""
    from mmrobust.lvlm.attack import attack_lvlm_untargeted

    x = torch.rand(batch, 3, image, image, generator=torch.Generator().manual_seed(0)).to(device)
    prompts, refs = ["Describe the image."] * batch, [["a cat"]] * batch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    attack_lvlm_untargeted(model, processor, x, prompts, refs, eps=4 / 255, steps=steps, seed=0)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", choices=list(SHAPES), default="tiny")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args()
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    model, processor, image = build(a.shape, a.device, dtype)
    n_params = sum(q.numel() for q in model.parameters())
    rows = []
    run_attack(model, processor, image, a.batch[0], 1, a.device)  # warm-up: kernels, allocator, caches
    for b in a.batch:
        if a.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        one, full = run_attack(model, processor, image, b, 1, a.device), run_attack(model, processor, image, b,
                                                                                     a.steps, a.device)
        peak = torch.cuda.max_memory_allocated() / 2**30 if a.device.startswith("cuda") else None
        rows.append({"batch": b, "steps": a.steps, "seconds": round(full, 3),
                     "seconds_per_step": round((full - one) / max(1, a.steps - 1), 4), "peak_gib": peak})
        print(json.dumps(rows[-1]))
    out = {"shape": a.shape, "device": a.device, "dtype": a.dtype, "n_params": n_params, "rows": rows,
           "gpu": torch.cuda.get_device_name() if a.device.startswith("cuda") else None}
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}))


if __name__ == "__main__":
    main()
