"""``python -m services.scoring``: the scoring worker and its HTTP probes."""

from services.scoring.processes import share_metrics
from services.scoring.settings import ScoringSettings
from shared.start_refusal import refusing_to_start


def main() -> None:
    with refusing_to_start("scoring"):
        settings = ScoringSettings()
        if settings.scoring_processes > 1:
            share_metrics()  # before the HTTP stack and the app create their metrics
        from services.scoring.app import create_app
        from shared.server import serve

        app = create_app(settings)
    serve(app, settings, service="scoring", port=settings.port)


if __name__ == "__main__":
    main()
