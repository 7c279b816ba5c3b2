"""Local emulator of HubSpot's CRM v3 objects, v4 associations, search and properties APIs.

api.py is the HTTP face (auth, limits, routes), store.py the portal's records it keeps,
search.py the search API. What the vendor publishes, with sources, is in
docs/vendor-contracts.md. It never imports retl's destinations: the emulator is an
independent oracle of the vendor's contract.
"""

from retl_assets.emulators.hubspot.api import HubSpotEmulator, build_hubspot_app, make_app

__all__ = ["HubSpotEmulator", "build_hubspot_app", "make_app"]
