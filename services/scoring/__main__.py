"""``python -m services.scoring``: the scoring worker and its HTTP probes."""

from services.scoring.app import create_app
from services.scoring.settings import ScoringSettings
from shared.server import refusing_to_start, serve


def main() -> None:
    with refusing_to_start("scoring"):
        settings = ScoringSettings()
        app = create_app(settings)
    serve(app, settings, service="scoring", port=settings.port)


if __name__ == "__main__":
    main()
