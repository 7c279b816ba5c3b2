"""Has a model's data changed? Asked of the warehouse, cheaply, by its `source_changed` sensor:
the warehouse's own change marker for each table the SQL reads, or the user's fingerprint
query. Either way a short string that differs whenever the data may have."""

from __future__ import annotations

import hashlib

from retl_assets.project import Model, Project
from retl_assets.project.query import tables_read
from retl_assets.sources import open_source, preview


def change_marker(project: Project, model: Model) -> str:
    changed = model.config.trigger.source_changed if model.config.trigger else None
    source = open_source(project, model.config.source)
    if changed is not None and changed.fingerprint:
        answer = preview(source, changed.fingerprint, 100).to_pylist()
        text = repr(answer)
    else:
        # The warehouse's own marker (commit time, last-modified time, Delta version).
        text = repr(source.version(tables_read(model.render_sql(0), model.dialect)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
