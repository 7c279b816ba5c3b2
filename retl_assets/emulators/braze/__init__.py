"""Local emulator of Braze's /users/track and /users/delete.

api.py is the HTTP face (auth, limits, routes). What the vendor
publishes, with sources, is in docs/vendor-contracts.md. It never imports retl's
destinations: the emulator is an independent oracle of the vendor's contract.
"""

from retl_assets.emulators.braze.api import BrazeEmulator, build_braze_app, make_app

__all__ = ["BrazeEmulator", "build_braze_app", "make_app"]
