"""Test storages: a PostgreSQL server when `.ci/run` (or the developer) started one."""

from __future__ import annotations

import os

import pytest

ENV = "PMLBAL_TEST_POSTGRES_URL"


def postgres_url_or_skip() -> str:
    """The server's SQLAlchemy URL from $PMLBAL_TEST_POSTGRES_URL; skip, saying why, if unusable."""
    url = os.environ.get(ENV)
    if not url:
        pytest.skip(f"no PostgreSQL server: set {ENV} (.ci/run starts one on loopback)")
    try:
        import sqlalchemy

        with sqlalchemy.create_engine(url).connect():
            pass
    except Exception as err:  # driver missing or server down: both mean "not reachable"
        pytest.skip(f"PostgreSQL at {ENV} not reachable: {type(err).__name__}: {err}")
    return url
