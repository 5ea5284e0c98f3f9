"""``python -m services.webhooks``: consumer, deliverer and the management API."""

from services.webhooks.app import create_app
from services.webhooks.settings import WebhooksSettings
from shared.server import serve
from shared.start_refusal import refusing_to_start


def main() -> None:
    with refusing_to_start("webhooks"):
        settings = WebhooksSettings()
        app = create_app(settings)
    serve(app, settings, service="webhooks", port=settings.port)


if __name__ == "__main__":
    main()
