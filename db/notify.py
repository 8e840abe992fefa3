"""The one NOTIFY channel. A notification is only a wake-up: listeners re-read the rows.

Payloads are tiny JSON objects, far below NOTIFY's 8000-byte limit:
``{"t": trainer_id, "k": kind, "id": row id, "r": revision, "l": ledger id}``.
The live-update hub (gql/hub.py) reads only ``t``: whose rows to re-read.
"""

CHANNEL = "punchcard_changes"
