"""The Definitions of the project named by RETL_PROJECT (else the bundled demo)."""

from __future__ import annotations

from retl_assets.assets import build_retl_definitions
from retl_assets.project import load_project

defs = build_retl_definitions(load_project())
