"""Local emulator of Iterable's users and events API.

api.py is the HTTP face (auth, limits, routes), store.py the state it keeps. What the vendor
publishes, with sources, is in docs/vendor-contracts.md. It never imports retl's
destinations: the emulator is an independent oracle of the vendor's contract.
"""

from retl_assets.emulators.iterable.api import IterableEmulator, build_iterable_app, make_app

__all__ = ["IterableEmulator", "build_iterable_app", "make_app"]
