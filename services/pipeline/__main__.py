"""``python -m services.pipeline``: the pipeline's REST service (the consumer joins it later)."""

from services.pipeline.app import create_app
from services.pipeline.settings import PipelineSettings
from shared.server import serve
from shared.start_refusal import refusing_to_start


def main() -> None:
    with refusing_to_start("pipeline"):
        settings = PipelineSettings()
        app = create_app(settings)
    serve(app, settings, service="pipeline", port=settings.port)


if __name__ == "__main__":
    main()
