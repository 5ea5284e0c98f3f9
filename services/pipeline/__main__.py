"""``python -m services.pipeline``: the pipeline's REST service (the consumer joins it later)."""

from services.pipeline.app import create_app
from services.pipeline.settings import PipelineSettings
from shared.server import serve


def main() -> None:
    settings = PipelineSettings()
    serve(create_app(settings), settings, service="pipeline", port=settings.port)


if __name__ == "__main__":
    main()
