"""``python -m services.webhooks``: consumer, deliverer and the management API."""

from services.webhooks.app import create_app
from services.webhooks.settings import WebhooksSettings
from shared.server import serve


def main() -> None:
    settings = WebhooksSettings()
    serve(create_app(settings), settings, service="webhooks", port=settings.port)


if __name__ == "__main__":
    main()
