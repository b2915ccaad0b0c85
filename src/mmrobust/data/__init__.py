"""Datasets, transforms, synthetic world, poisoning."""
