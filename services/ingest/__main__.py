"""``python -m services.ingest``: the ingest HTTP service."""

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.server import serve
from shared.start_refusal import refusing_to_start


def main() -> None:
    with refusing_to_start("ingest"):
        settings = IngestSettings()
        app = create_app(settings)
    serve(app, settings, service="ingest", port=settings.port)


if __name__ == "__main__":
    main()
