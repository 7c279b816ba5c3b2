"""Local receiver of retl's signed webhook batches.

api.py is the HTTP face (auth, limits, routes). What the vendor
publishes, with sources, is in docs/vendor-contracts.md. It never imports retl's
destinations: the emulator is an independent oracle of the vendor's contract.
"""

from retl_assets.emulators.webhook.api import WebhookEmulator, build_webhook_app, make_app

__all__ = ["WebhookEmulator", "build_webhook_app", "make_app"]
