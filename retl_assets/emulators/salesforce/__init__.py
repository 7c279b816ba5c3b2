"""Local emulator of a Salesforce org: sObject Collections and Bulk API 2.0 ingest.

api.py is the HTTP face (auth, limits, routes), store.py the state it keeps. What the vendor
publishes, with sources, is in docs/vendor-contracts.md. It never imports retl's
destinations: the emulator is an independent oracle of the vendor's contract.
"""

from retl_assets.emulators.salesforce.api import SalesforceEmulator, build_salesforce_app, make_app

__all__ = ["SalesforceEmulator", "build_salesforce_app", "make_app"]
