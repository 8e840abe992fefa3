"""punchcard: a GraphQL API that keeps personal trainers' session packages exactly right.

Everything installs under this one package. Its entries are the repository's folders
(links to them), lowest layer first; a module imports only from its own layer or lower
ones (``tests/test_layers.py`` checks it, and that there are no import cycles):

- ``settings``, ``internals``, ``tasks``: the settings object; probes of third-party
  private parts; stopping background tasks
- ``db``: tables, migrations, the SQL of each domain, NOTIFY/LISTEN, embedded PostgreSQL
- ``gql``: GraphQL per request: types, context and auth, loaders, documents, the engine,
  the HTTP endpoint, schema assembly
- ``live``: live updates: socket -> connection -> hub -> outbox, and the streams
- ``resolvers``: one module per domain; ``resolvers.ROOTS`` is what the schema assembles
- ``sweeper``: the background worker and its reminder senders (no GraphQL)
- ``server``: the process shell: the CLI, the app factory (composition root), demo data

``docs/architecture.md`` walks a ``useSession`` and a NOTIFY through them.
"""

__version__ = "0.1.0"
