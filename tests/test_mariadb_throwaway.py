"""The throwaway MariaDB server used where the machine has none: it must really work."""
from __future__ import annotations

import os
import shutil

import pytest

from cruncher.db import engine as dbengine
from cruncher.db import queries
from cruncher.testing.mariadb import ThrowawayServer, scratch_database

pytestmark = pytest.mark.mariadb


@pytest.mark.skipif(not shutil.which("mariadb-install-db") and not os.environ.get(
    "CRUNCHER_REQUIRE_MARIADB"), reason="no mariadbd binary on this machine")
def test_throwaway_server_runs_the_schema(tmp_path):
    server = ThrowawayServer()
    try:
        url = server.start()
        with scratch_database(url) as db:
            eng = dbengine.make_engine(db)
            assert dbengine.init_db(eng) == dbengine.schema.SCHEMA_VERSION
            queries.add_note(eng, "S20131118S0001.fits", "x", bad=True, user="t")
            assert queries.is_bad(eng, "S20131118S0001.fits")
            eng.dispose()
    finally:
        server.stop()
    assert not server.dir.exists()
