"""The project file: what loads, and errors that name the entry and field."""

from __future__ import annotations

import textwrap

import pytest

from retl_assets.errors import ProjectError
from retl_assets.mapping import plan
from retl_assets.mapping.templates import template_sql
from retl_assets.project import load_project

BASE = """
sources: {w: {type: duckdb, path: w.duckdb}}
destinations:
  crm: {type: hubspot, access_token: {env: T}%s}
models:
  m: {source: w, primary_key: id, sql: "SELECT 1 AS id, 'a' AS email"}
syncs:
  s: {model: m, destination: crm, object: contacts, match: {email: email}, %s}
"""


def load(tmp_path, dest_extra: str = "", sync_extra: str = "action: upsert"):
    path = tmp_path / "retl.yaml"
    path.write_text(textwrap.dedent(BASE % (dest_extra, sync_extra)))
    return load_project(path)


def test_a_valid_project_loads(tmp_path):
    project = load(tmp_path, ", rate_limit: '190/10'", "action: mirror")
    assert project.config.destinations["crm"].rate_override() == (190, 10.0)
    assert project.config.syncs["s"].selects == ("added", "updated", "deleted")


@pytest.mark.parametrize("dest_extra, sync_extra, words", [
    (", rate_limit: fast", "action: upsert", "destinations.crm.rate_limit"),
    (", acess_token: x", "action: upsert", "crm.acess_token: unknown field"),
    ("", "action: identify", "syncs.s.action: hubspot offers upsert, mirror, archive"),
    ("", "action: mirror, records: added", "syncs.s.records: `mirror` sends added"),
])
def test_errors_name_the_entry_and_field(tmp_path, dest_extra, sync_extra, words):
    with pytest.raises(ProjectError) as e:
        load(tmp_path, dest_extra, sync_extra)
    assert words in str(e.value)


def test_unknown_destination_type_is_named(tmp_path):
    path = tmp_path / "retl.yaml"
    path.write_text(textwrap.dedent(BASE % ("", "action: upsert")).replace(
        "type: hubspot", "type: hubspotty"))
    with pytest.raises(ProjectError, match=r"crm\.type: unknown destination type 'hubspotty'"):
        load_project(path)


def test_templates_compile_to_sql_and_name_bad_columns():
    import duckdb

    sql = template_sql("{{ first }} {{ last | upper }}!", {"first", "last"}, "syncs.s.mapping.n")
    row = duckdb.sql(f"SELECT {sql} FROM (SELECT 'Ada' AS first, NULL AS last)").fetchall()
    assert row == [("Ada !",)]
    with pytest.raises(ProjectError, match=r"syncs\.s\.mapping\.n: template uses 'nope'"):
        template_sql("{{ nope }}", {"first"}, "syncs.s.mapping.n")
    with pytest.raises(ProjectError, match="may hold only text"):
        template_sql("{% for x in y %}{% endfor %}", {"first"}, "syncs.s.mapping.n")


def test_mapping_to_a_missing_column_names_sync_and_field(tmp_path):
    project = load(tmp_path, "", "action: upsert, mapping: {firstname: first_name}")
    from retl_assets.mapping import Rules
    with pytest.raises(ProjectError, match=r"syncs\.s\.mapping\.firstname: column 'first_name'"):
        plan("s", project.config.syncs["s"], "m", {"id": "INTEGER", "email": "VARCHAR"},
             Rules(frozenset(), "properties"))


def test_a_sync_mode_the_destination_cannot_tell_apart_is_refused_at_load(tmp_path):
    path = tmp_path / "retl.yaml"
    path.write_text(textwrap.dedent("""
        sources: {w: {type: duckdb, path: w.duckdb}}
        destinations: {cdp: {type: segment, write_key: k}}
        models: {m: {source: w, primary_key: id, sql: "SELECT 1 AS id"}}
        syncs: {s: {model: m, destination: cdp, action: create}}
    """))
    with pytest.raises(ProjectError, match=r"syncs\.s\.action: segment cannot tell a new "
                                           r"record from an existing one.*create-only"):
        load_project(path)
