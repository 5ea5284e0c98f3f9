"""``python -m services.scoring``: the scoring worker and its HTTP probes."""

from services.scoring.app import create_app
from services.scoring.settings import ScoringSettings
from shared.server import serve


def main() -> None:
    settings = ScoringSettings()
    serve(create_app(settings), settings, service="scoring", port=settings.port)


if __name__ == "__main__":
    main()
