"""Snapshots: a model's rows streamed from its source, fingerprinted, keys checked, staged."""
