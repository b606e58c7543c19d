"""`fastpath rcu stats`: read the statistics of the tables and domains that left a note
(rcu.registry), through a read-only mapping of their memfd. Reading needs no lock and
no cooperation: a writer keeps its counters in its region's header (rcu.layout), a
Domain in its one-page stats region."""

from __future__ import annotations

from fastpath.rcu import registry
from fastpath.rcu.domain import read_domain_stats
from fastpath.rcu.region import read_stats


def read(note: dict) -> dict:
    region = registry.open_region(note)
    try:
        if note.get("kind", "table") == "domain":
            return {"name": note["name"], "pid": note["pid"], **read_domain_stats(region.buf)}
        return {"name": note["name"], **read_stats(region.buf)}
    finally:
        region.close()
