"""Local emulator of Mixpanel's /engage and /import.

api.py is the HTTP face (auth, limits, routes), store.py the state it keeps. What the vendor
publishes, with sources, is in docs/vendor-contracts.md. It never imports retl's
destinations: the emulator is an independent oracle of the vendor's contract.
"""

from retl_assets.emulators.mixpanel.api import MixpanelEmulator, build_mixpanel_app, make_app

__all__ = ["MixpanelEmulator", "build_mixpanel_app", "make_app"]
