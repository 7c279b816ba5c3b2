"""Salesforce: sObject Collections, and Bulk API 2.0 jobs for large changesets.

config.py is its entry in the project file; writer.py turns a sync's records into the
vendor's requests and its answers into outcomes; bulk.py delivers a batch of a bulk form
(bulk_upsert, bulk_delete) as one Bulk API 2.0 job, its requests sent through the engine;
answers.py reads the errors both meet. The emulator is emulators/salesforce/.
"""

from __future__ import annotations

from retl_assets.destinations.salesforce.config import SalesforceConfig
from retl_assets.destinations.salesforce.writer import ACTIONS, connect
from retl_assets.vendors import Facts

FACTS = {
    "salesforce": Facts(config=SalesforceConfig, connect=connect, actions=ACTIONS["salesforce"]),
}

__all__ = ["FACTS", "SalesforceConfig", "connect"]
