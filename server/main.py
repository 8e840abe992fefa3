"""``punchcard.server.main:app``: the app built from the environment, for uvicorn workers."""

from punchcard.server.app import create_app
from punchcard.settings import Settings

app = create_app(Settings.from_env())
