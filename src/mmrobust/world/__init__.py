"""The embedded world: everything the offline demo and the tests build instead of downloading.

``shapes``: seeded coloured-shape scenes with captions and labels (the CLIP world); ``captions``: held-out
images with reference captions (captioning);
``mmr``: MMR-format leading-question pairs over those scenes; ``llava``: a tiny LLaVA built from a
config with a word-level tokenizer, saved like a hub checkpoint.
"""
