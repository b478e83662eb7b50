"""`python -m gateway`: serve the gateway with uvicorn (client waits bounded: gateway.server)."""

from __future__ import annotations

from gateway.app import create_app
from gateway.server import serve
from shared.settings import get_settings


def main() -> None:
    settings = get_settings()
    serve(create_app(settings), settings)


if __name__ == "__main__":
    main()
