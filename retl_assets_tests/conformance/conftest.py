"""The vendors' own client libraries, pointed at our emulators on loopback.

Our writers and our emulators come from the same hands, so their agreement alone proves
little; these tests check the emulators against what each vendor's official library sends
and parses. The libraries are test-only: retl keeps its own writers.
"""
