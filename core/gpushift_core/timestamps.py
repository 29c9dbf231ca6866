"""The one time stamp format of gpushift's records (pure).

UTC with microseconds and a `Z`: Kubernetes' MicroTime (Lease renewTime, Event times)
and the format of the migration file, its Notebook mirror and runtime-config.json, so
that a time read in one place compares with a time written in another.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["MICRO_TIME", "iso_utc", "parse_utc"]

MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def iso_utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(MICRO_TIME)


def parse_utc(value: object) -> dt.datetime | None:
    """An ISO 8601 time as written by us or by Kubernetes (a zone-less one is UTC); None
    for anything else, so that a damaged field never raises."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment
