"""Typed library entry points behind each CLI command (train, evaluate, demo stories)."""
