"""Datasets users bring (CSV manifests, labelled splits), transforms, text augmentation, poisoning."""
