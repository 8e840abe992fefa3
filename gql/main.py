"""``gql.main:app``: the app built from the environment, for uvicorn workers."""

from gql.app import create_app
from gql.settings import Settings

app = create_app(Settings.from_env())
