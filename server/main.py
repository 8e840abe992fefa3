"""``punchcard.server.main:app`` and ``:http``: the app and uvicorn's HTTP protocol (with
the header deadline, ``server/slow_clients.py``) built from the environment, for uvicorn
workers."""

from punchcard.server.app import create_app
from punchcard.server.slow_clients import http_protocol
from punchcard.settings import Settings

settings = Settings.from_env()
app = create_app(settings)
http = http_protocol(settings)
