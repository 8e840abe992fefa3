"""Packages as of a moment: ``sessionsAsOf`` and ``packageReport`` (SQL in db/reports.py)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from punchcard.db import checks, reports
from punchcard.gql.context import Info
from punchcard.gql.ids import Kind, lookup
from punchcard.gql.reports import PackageReport, PackageReportRow, PackageReportTotals, SessionsAsOf


@strawberry.type
class Query:
    @strawberry.field(
        description="A package's counts as of `at`, from its ledger; null if it was not "
        "sold yet at `at` (or is not yours)."
    )
    async def sessions_as_of(
        self, info: Info, purchase_id: strawberry.ID, at: datetime
    ) -> SessionsAsOf | None:
        row_id = lookup(Kind.PURCHASE, purchase_id)
        moment = checks.moment("at", at)
        if row_id is None:
            return None
        row = await reports.sessions_as_of(
            info.context.pool, trainer_id=info.context.trainer_id, purchase_id=row_id, at=moment
        )
        return SessionsAsOf.from_row(row, moment) if row is not None else None

    @strawberry.field(
        description="Every package sold by `asOf` (default: now) with its counts as of then, "
        "what expires within 30 days and the unused value; also GET /reports/packages.csv."
    )
    async def package_report(self, info: Info, as_of: datetime | None = None) -> PackageReport:
        moment, rows = await reports.package_report(
            info.context.pool,
            trainer_id=info.context.trainer_id,
            as_of=checks.moment("asOf", as_of) if as_of is not None else None,
        )
        return PackageReport(
            as_of=moment,
            packages=[PackageReportRow.of(row, moment) for row in rows],
            totals=PackageReportTotals.of(reports.Totals.of(rows)),
        )
