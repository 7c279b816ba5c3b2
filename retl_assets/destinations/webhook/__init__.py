"""A generic signed webhook: JSON batches POSTed to any HTTPS endpoint.

config.py is its entry in the project file; writer.py turns a sync's records into the
vendor's requests and its answers into outcomes. The emulator is emulators/webhook/.
"""

from __future__ import annotations

from retl_assets.destinations.webhook.config import WebhookConfig
from retl_assets.destinations.webhook.writer import ACTIONS, connect
from retl_assets.vendors import Facts

FACTS = {
    "webhook": Facts(config=WebhookConfig, connect=connect, actions=ACTIONS["webhook"]),
}

__all__ = ["FACTS", "WebhookConfig", "connect"]
