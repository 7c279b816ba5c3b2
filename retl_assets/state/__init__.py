"""The state store: heads, logs, sync cursors and leases, written atomically; where the truth
lives. What is in it is made by snapshot/, changeset/ and sync/."""
