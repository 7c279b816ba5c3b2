"""Snapshots, ledgers, fingerprints: where the truth lives."""
