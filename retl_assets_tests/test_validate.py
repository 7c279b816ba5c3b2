"""`retl validate` and loading refuse what `retl sync` would trip over later: a key given
twice in the project file, duplicate or NULL primary keys, and errors that hide the port."""

from __future__ import annotations

import pytest

from retl_assets.cli import main
from retl_assets.errors import ProjectError
from retl_assets.inspect import key_counts, validate
from retl_assets.inspect import test_connection as check_connection
from retl_assets.project import load_project
from retl_assets_tests.conftest import free_port


@pytest.fixture
def project_env(workspace, monkeypatch):
    monkeypatch.setenv("RETL_PROJECT", str(workspace.root / "retl.yaml"))
    return workspace


def edit(workspace, old: str, new: str) -> None:
    text = (workspace.root / "retl.yaml").read_text()
    assert old in text
    workspace.write(text.replace(old, new, 1))


def test_a_sync_given_twice_is_refused_with_its_lines(project_env, capsys):
    text = (project_env.root / "retl.yaml").read_text()
    project_env.write(text + "  contacts_identify:\n    model: contacts\n    destination: cio\n"
                             "    action: track\n")
    with pytest.raises(ProjectError) as error:
        load_project(project_env.root / "retl.yaml")
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines, 1) if line == "  contacts_identify:")
    assert (f"syncs.contacts_identify is given twice (lines {first} and {len(lines) + 1})"
            in str(error.value))
    assert main(["validate"]) == 2
    assert "syncs.contacts_identify is given twice" in capsys.readouterr().err


def test_a_nested_key_given_twice_is_refused_but_a_merge_may_override(project_env):
    edit(project_env, "      userId: userId\n", "      userId: userId\n      userId: email\n")
    with pytest.raises(ProjectError, match=r"syncs\.contacts_deleted\.mapping\.userId is given "
                                           r"twice"):
        load_project()
    edit(project_env, "      userId: email\n", "")
    edit(project_env, "    max_retries: 8\n", "    max_retries: 8\n    <<: &limits\n"
                                                "      timeout_s: 5\n")
    assert load_project().config.destinations["cio"].timeout_s == 5


def test_validate_counts_the_keys_in_one_query(project_env):
    problems, checked = validate()
    assert problems == []
    assert ("model contacts: 5 columns, key userId: 300 rows, every key present and unique "
            "(one count query)") in checked


def test_validate_reports_duplicate_and_null_keys_with_examples(project_env):
    edit(project_env, "FROM contacts\n", "FROM contacts UNION ALL SELECT id, email, first_name, "
         "plan, updated_at FROM contacts WHERE id IN ('u000004', 'u000009') UNION ALL SELECT "
         "NULL, 'x@example.com', 'X', 'free', NULL\n")
    problems, _ = validate()
    assert len(problems) == 1
    assert problems[0].startswith("models.contacts.primary_key: userId must be present and "
                                  "unique; of 303 rows, 1 rows have a NULL key; 2 keys are held "
                                  "by more than one row (e.g. ")
    assert "u000004" in problems[0] and "u000009" in problems[0]
    assert "`retl sync` would refuse this extract" in problems[0]


def test_a_composite_key_is_counted_as_one(project_env):
    edit(project_env, "primary_key: userId", "primary_key: [plan, first_name]")
    counts = key_counts(load_project(), "contacts")
    assert counts.rows == 300 and counts.duplicated > 0 and counts.null_rows == 0
    assert counts.keys == len(project_env.sql("SELECT DISTINCT plan, first_name FROM contacts"))
    assert all(", " in example for example in counts.examples)


def test_unreachable_destinations_name_the_port(project_env):
    port = free_port()  # nothing listens there
    edit(project_env, "    base_url: ", f"    base_url: http://127.0.0.1:{port}?key=s3cret\n"
                                         "    old_url: ")
    edit(project_env, "    old_url: ", "    # ")
    edit(project_env, "max_retries: 8", "max_retries: 0")
    ok, message = check_connection("cio")
    assert not ok and f"cannot reach http://127.0.0.1:{port}: ConnectError" in message
    run = project_env.sync()
    assert run.status == "failure"
    assert any(f"could not be reached at http://127.0.0.1:{port} after 1 attempts" in e
               and "s3cret" not in e for e in run.errors), run.errors
