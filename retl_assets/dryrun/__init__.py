"""A sync's next run worked out without committing anything: the dry run (report.py) and
sending one chosen record now (one.py), both on the plan of plan.py."""

from retl_assets.dryrun.one import OneSent, send_one
from retl_assets.dryrun.report import DryRun, dry_run, shown_samples

__all__ = ["DryRun", "OneSent", "dry_run", "send_one", "shown_samples"]
