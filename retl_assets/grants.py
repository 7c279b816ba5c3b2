"""`retl grants SOURCE`: the SQL that creates a role (and user) able to read only the tables
the source's models read, found by parsing their SQL. Least privilege is the second wall
behind the read-only check: a role that holds no write grant cannot write, whatever it runs."""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from retl_assets.errors import RetlError
from retl_assets.project import Project
from retl_assets.project.query import tables_read


@dataclass(frozen=True)
class Table:
    catalog: str | None  # database (Snowflake, PostgreSQL), project (BigQuery), catalog
    schema: str | None  # schema, dataset (BigQuery)
    name: str

    def sql(self, dialect: str) -> str:
        parts = [p for p in (self.catalog, self.schema, self.name) if p]
        return ".".join(exp.to_identifier(p).sql(dialect=dialect) for p in parts)


def grants(project: Project, source: str, role: str = "retl_reader") -> str:
    if source not in project.config.sources:
        raise RetlError(f"no source named {source!r} "
                        f"(sources: {', '.join(project.config.sources)})")
    config = project.config.sources[source]
    kind = config.type
    tables = _tables(project, source, kind, config)
    models = [m.name for m in project.models.values() if m.config.source == source]
    head = (f"-- retl grants for source {source} ({kind}): role {role} may read only the "
            f"{len(tables)} table(s) that models {', '.join(models) or '(none)'} read.\n"
            "-- Review, replace the <placeholders>, and run as an administrator. "
            "Re-run `retl grants` when a model reads a new table.\n")
    lines = RENDER[kind](role, tables, config)
    in_warehouse = [m.name for m in project.models.values()
                    if m.config.source == source and m.config.diff == "in_warehouse"]
    if in_warehouse and kind in STATE:
        lines += [f"-- models {', '.join(in_warehouse)} diff in the warehouse: the role owns "
                  f"its state schema {config.state_schema}, and writes nothing else"]
        lines += STATE[kind](role, config.state_schema, config)
    return head + "\n".join(lines) + "\n"


def _tables(project: Project, source: str, kind: str, config) -> list[Table]:
    # Where an unqualified name resolves: each warehouse's own config words for it.
    fields = config.model_dump(by_alias=True)
    default_catalog = fields.get("database") or fields.get("project") or fields.get("catalog")
    default_schema = (fields.get("schema") or fields.get("dataset")
                      or {"postgres": "public", "redshift": "public"}.get(kind))
    found: dict[Table, None] = {}
    for model in project.models.values():
        if model.config.source != source:
            continue
        for name in tables_read(model.render_sql(0), model.dialect):
            t = exp.to_table(name, dialect=model.dialect)
            found.setdefault(Table(t.catalog or default_catalog, t.db or default_schema, t.name))
    return sorted(found, key=lambda t: (t.catalog or "", t.schema or "", t.name))


def _postgres(role: str, tables: list[Table], config) -> list[str]:
    lines = [f"CREATE ROLE {role} LOGIN PASSWORD '<choose a password>';",
             f"ALTER ROLE {role} SET default_transaction_read_only = on;"]
    databases = sorted({t.catalog for t in tables if t.catalog})
    lines += [f"GRANT CONNECT ON DATABASE {_q(d, 'postgres')} TO {role};" for d in databases]
    lines += [f"GRANT USAGE ON SCHEMA {_q(s, 'postgres')} TO {role};"
              for s in sorted({t.schema for t in tables if t.schema})]
    lines += [f"GRANT SELECT ON {Table(None, t.schema, t.name).sql('postgres')} TO {role};"
              for t in tables]
    return lines


def _redshift(role: str, tables: list[Table], config) -> list[str]:
    fields = config.model_dump()
    if fields.get("cluster_identifier") or fields.get("workgroup"):
        # IAM hands out temporary credentials: the user needs no password of its own.
        lines = [f"CREATE USER {role} PASSWORD DISABLE;"]
    else:
        lines = [f"CREATE USER {role} PASSWORD '<choose a password: 8 to 64 characters, with "
                 f"an upper-case letter, a lower-case letter and a digit>';"]
    lines += [f"GRANT USAGE ON SCHEMA {_q(s, 'redshift')} TO {role};"
              for s in sorted({t.schema for t in tables if t.schema})]
    lines += [f"GRANT SELECT ON {Table(None, t.schema, t.name).sql('redshift')} TO {role};"
              for t in tables]
    return lines


def _snowflake(role: str, tables: list[Table], config) -> list[str]:
    r = role.upper()
    warehouse = config.model_dump().get("warehouse") or "<warehouse>"
    lines = ["USE ROLE SECURITYADMIN;", f"CREATE ROLE IF NOT EXISTS {r};",
             f"GRANT USAGE ON WAREHOUSE {warehouse} TO ROLE {r};"]
    lines += [f"GRANT USAGE ON DATABASE {_q(d, 'snowflake')} TO ROLE {r};"
              for d in sorted({t.catalog for t in tables if t.catalog})]
    lines += [f"GRANT USAGE ON SCHEMA {s.sql('snowflake')} TO ROLE {r};"
              for s in _schemas(tables)]
    lines += [f"GRANT SELECT ON TABLE {t.sql('snowflake')} TO ROLE {r};  -- ON VIEW for a view"
              for t in tables]
    lines += [f"CREATE USER IF NOT EXISTS {r}_USER TYPE = SERVICE DEFAULT_ROLE = {r} "
              f"DEFAULT_WAREHOUSE = {warehouse} RSA_PUBLIC_KEY = '<your public key>';",
              f"GRANT ROLE {r} TO USER {r}_USER;"]
    return lines


def _bigquery(role: str, tables: list[Table], config) -> list[str]:
    project = config.model_dump().get("project") or "<project>"
    account = f"{role.replace('_', '-')}@{project}.iam.gserviceaccount.com"
    lines = ["-- The service account, and its right to run query jobs (IAM, not SQL):",
             f"--   gcloud iam service-accounts create {role.replace('_', '-')} "
             f"--project={project}",
             f"--   gcloud projects add-iam-policy-binding {project} "
             f"--member=serviceAccount:{account} --role=roles/bigquery.jobUser"]
    lines += [f"GRANT `roles/bigquery.dataViewer` ON TABLE {t.sql('bigquery')} "
              f"TO \"serviceAccount:{account}\";" for t in tables]
    return lines


def _databricks(role: str, tables: list[Table], config) -> list[str]:
    principal = f"`{role.replace('_', '-')}`"
    lines = [f"-- Create the service principal {principal} in the account console, give it "
             "CAN USE on the SQL warehouse, and a token (not SQL).",
             *[f"GRANT USE CATALOG ON CATALOG {_q(c, 'databricks')} TO {principal};"
               for c in sorted({t.catalog for t in tables if t.catalog})],
             *[f"GRANT USE SCHEMA ON SCHEMA {s.sql('databricks')} TO {principal};"
               for s in _schemas(tables)]]
    lines += [f"GRANT SELECT ON TABLE {t.sql('databricks')} TO {principal};" for t in tables]
    return lines


def _duckdb(role: str, tables: list[Table], config) -> list[str]:
    return ["-- DuckDB has no roles or grants: retl opens the file read-only, so no query can "
            "change it.",
            *[f"-- reads {t.sql('duckdb')}" for t in tables]]


def _postgres_state(role: str, schema: str, config) -> list[str]:
    return [f"CREATE SCHEMA IF NOT EXISTS {_q(schema, 'postgres')} AUTHORIZATION {role};"]


def _snowflake_state(role: str, schema: str, config) -> list[str]:
    r = role.upper()
    database = config.model_dump().get("database") or "<database>"
    where = Table(None, database, schema).sql("snowflake")
    return [f"CREATE SCHEMA IF NOT EXISTS {where};",
            f"GRANT USAGE, CREATE TABLE ON SCHEMA {where} TO ROLE {r};"]


# Where `diff: in_warehouse` keeps its tables (DuckDB's is a file of retl's own).
STATE = {"postgres": _postgres_state, "snowflake": _snowflake_state}

RENDER = {"postgres": _postgres, "redshift": _redshift, "snowflake": _snowflake,
          "bigquery": _bigquery, "databricks": _databricks, "duckdb": _duckdb}


def _schemas(tables: list[Table]) -> list[Table]:
    """Each schema the tables sit in, as a name of its own (`catalog.schema`)."""
    return sorted({Table(None, t.catalog, t.schema) for t in tables if t.schema},
                  key=lambda s: (s.schema or "", s.name))


def _q(name: str, dialect: str) -> str:
    return exp.to_identifier(name).sql(dialect=dialect)
