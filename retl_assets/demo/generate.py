"""A small, deterministic demo warehouse: contacts, companies, events."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

PLANS = ("free", "starter", "pro", "enterprise")
FIRST = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret",
         "Dennis", "Radia", "Tim", "Sophie", "Linus", "Hedy", "John")
INDUSTRIES = ("software", "retail", "finance", "health", "media", "logistics")
EPOCH = datetime(2026, 1, 1)


def generate(path: str | Path, contacts: int = 3000, companies: int = 300, events: int = 6000,
             seed: int = 42) -> Path:
    """(Re)create the demo warehouse at `path`; the same arguments give the same data."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    rng = random.Random(seed)
    con = duckdb.connect(str(path))
    try:
        con.execute("""
            CREATE TABLE companies (id INTEGER PRIMARY KEY, name VARCHAR, domain VARCHAR,
                                    industry VARCHAR, employees INTEGER);
            CREATE TABLE contacts (id VARCHAR PRIMARY KEY, email VARCHAR, first_name VARCHAR,
                                   plan VARCHAR, company_id INTEGER, updated_at TIMESTAMP);
            CREATE TABLE events (id BIGINT PRIMARY KEY, contact_id VARCHAR, name VARCHAR,
                                 occurred_at TIMESTAMP);
        """)
        con.executemany("INSERT INTO companies VALUES (?, ?, ?, ?, ?)", [
            (i, f"Company {i}", f"company{i}.example.com", rng.choice(INDUSTRIES),
             rng.randint(2, 5000)) for i in range(1, companies + 1)
        ])
        con.executemany("INSERT INTO contacts VALUES (?, ?, ?, ?, ?, ?)", [
            (f"u{i:06d}", f"user{i}@example.com", rng.choice(FIRST), rng.choice(PLANS),
             rng.randint(1, companies), EPOCH + timedelta(minutes=rng.randint(0, 400_000)))
            for i in range(1, contacts + 1)
        ])
        con.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", [
            (i, f"u{rng.randint(1, contacts):06d}", rng.choice(("Signed In", "Viewed Page",
             "Upgraded", "Invited Teammate")),
             EPOCH + timedelta(minutes=rng.randint(0, 400_000)))
            for i in range(1, events + 1)
        ])
    finally:
        con.close()
    return path


if __name__ == "__main__":
    import sys

    target = Path(__file__).parent / "warehouse.duckdb"
    if "--force" in sys.argv or not target.exists():
        generate(target)
        print(f"demo warehouse written to {target}")
    else:
        print(f"demo warehouse already at {target} (use --force to regenerate)")
