"""``python -m services.ingest``: the ingest HTTP service."""

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.server import serve


def main() -> None:
    settings = IngestSettings()
    serve(create_app(settings), settings, service="ingest", port=settings.port)


if __name__ == "__main__":
    main()
