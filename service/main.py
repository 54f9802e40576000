"""Module-level app for ASGI servers: `uvicorn service.main:app` (settings from SEQCAST_)."""

from service.app import create_app

app = create_app()
