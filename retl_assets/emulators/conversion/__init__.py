"""Local emulator of Conversion's v2 contacts, events and objects APIs.

api.py is the HTTP face (auth, limits, routes), store.py the state it keeps. What the vendor
publishes, with sources, is in docs/vendor-contracts.md. It never imports retl's
destinations: the emulator is an independent oracle of the vendor's contract.
"""

from retl_assets.emulators.conversion.api import ConversionEmulator, build_conversion_app, make_app

__all__ = ["ConversionEmulator", "build_conversion_app", "make_app"]
