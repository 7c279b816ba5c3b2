"""Local emulator of CleverTap's upload and delete-profiles APIs.

api.py is the HTTP face (auth, limits, routes), store.py the state it keeps. What the vendor
publishes, with sources, is in docs/vendor-contracts.md. It never imports retl's
destinations: the emulator is an independent oracle of the vendor's contract.
"""

from retl_assets.emulators.clevertap.api import CleverTapEmulator, build_clevertap_app, make_app

__all__ = ["CleverTapEmulator", "build_clevertap_app", "make_app"]
