"""Changesets: a snapshot compared with the previous committed one."""
