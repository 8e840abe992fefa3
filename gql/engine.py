"""The engine: runs documents on strawberry's schema through graphql-core directly.

One per app (``server/app.py`` builds it from the settings). It holds the process's
document cache and executes an operation with a context, nothing else; the HTTP
endpoint, the WebSocket's queries and mutations and the live hub all go through it, and
``gql/results.py`` turns what it returns into what a client sees.

A query or single-row mutation the planner understands (``gql/plan.py``) runs on its
plan (``gql/planned.py``), and on graphql-core whenever the plan meets something
unexpected (a mutation's root outcomes completed by graphql-core, never run twice);
``planner=False`` runs every document on graphql-core, and ``planner_differential`` runs
planned operations on both and compares them (``gql/differential.py``).
"""

from __future__ import annotations

import logging
import time
from inspect import isawaitable
from typing import Any

import asyncpg
from graphql import ExecutionResult, GraphQLSchema, OperationType
from graphql.execution import Executor, execute
from strawberry.execution import optimized_is_awaitable

from punchcard import metrics
from punchcard.db.pool import UNAVAILABLE, OneConnection
from punchcard.gql import planned
from punchcard.gql.auth import Principal
from punchcard.gql.context import Caller, Context, Services, build_context
from punchcard.gql.differential import check
from punchcard.gql.documents import Documents, Operation
from punchcard.gql.errors import (
    BAD_USER_INPUT,
    INTERNAL,
    code_of,
    request_errors,
    with_code,
    with_extensions,
)
from punchcard.gql.plan import Plan, Planner
from punchcard.gql.schema import PunchcardSchema
from punchcard.internals import StrawberryCore, strawberry_core

log = logging.getLogger("punchcard.planner")


class EngineUnavailable(RuntimeError):
    """The installed strawberry lacks what the engine needs (see punchcard/internals.py)."""


class Engine:
    def __init__(self, schema: PunchcardSchema) -> None:
        core = strawberry_core(schema)
        if core is None:
            raise EngineUnavailable("strawberry's internals changed; see punchcard/internals.py")
        self.schema = schema
        self.core: StrawberryCore = core
        self.graphql_schema: GraphQLSchema = core.graphql_schema
        self.executor_class: type[Executor[Any]] = core.execution_context_class
        rules = schema.validation_rules
        self.documents = Documents(
            self.graphql_schema,
            validate=lambda s, d: core.validate(s, d, rules),
            max_tokens=schema.limits.max_tokens,
        )
        self.planner = Planner(self.graphql_schema, schema.config.info_class)

    async def execute(
        self,
        operation: Operation,
        variables: dict[str, Any] | None,
        services: Services,
        caller: Caller,
    ) -> ExecutionResult:
        """Run a query or mutation (validated: ``documents.operation``) for ``caller``.

        A mutation of several root fields runs in one transaction on one connection: if
        any field fails, none of them commits and ``data`` is null (graphql-core runs the
        fields in order, so a failed field after a committed one would otherwise leave a
        change the answer does not show). So does a single field whose answer reaches past
        its own row (nested objects, fields with arguments): an error there would answer
        ``data: null`` for a change that committed. A single field answered from its own
        row is one statement (or its own transaction) already, and keeps its one round
        trip.

        Counted in ``punchcard.metrics`` by operation name: the run, its time, each error's
        code."""
        label = metrics.operation_label(operation.defined_name)
        started = time.perf_counter()
        try:
            result = await self._execute(operation, variables, services, caller)
        except BaseException:
            _count(label, operation, started, [INTERNAL])
            raise
        _count(label, operation, started, [code_of(e) for e in result.errors or ()])
        return result

    async def _execute(
        self,
        operation: Operation,
        variables: dict[str, Any] | None,
        services: Services,
        caller: Caller,
    ) -> ExecutionResult:
        if not operation.atomic:
            settings = services.settings
            plan = self.planner.plan(operation) if settings.planner else None
            if plan is None:
                self.planner.count("unplanned")
                return await self._run(operation, variables, build_context(services, caller))
            if settings.planner_differential:
                return await self._differential(plan, variables, services, caller)
            context = build_context(services, caller)
            outcomes: dict[str, Any] = {}
            result = await self._planned(plan, variables, context, outcomes)
            if result is not None:
                return result
            return await self._run(operation, variables, context, outcomes)
        trainer_id = caller.trainer_id if isinstance(caller, Principal) else None
        async with services.pool.acquire_as(trainer_id) as conn:
            transaction = conn.transaction()
            await transaction.start()
            one = OneConnection(conn)
            try:
                result = await self._run(operation, variables, build_context(services, caller, one))
            except BaseException:
                await one.close()
                await transaction.rollback()
                raise
            await one.close()  # nothing a failed field left running may query from here on
            if result.errors:
                await transaction.rollback()
                if not operation.several_fields:
                    return ExecutionResult(data=None, errors=result.errors)
                return ExecutionResult(
                    data=None, errors=[with_extensions(e, rolledBack=True) for e in result.errors]
                )
            await transaction.commit()
            return result

    async def _planned(
        self,
        plan: Plan,
        variables: dict[str, Any] | None,
        context: Context,
        outcomes: dict[str, Any] | None = None,
    ) -> ExecutionResult | None:
        """The plan's answer, or None: graphql-core answers (on the same context, whose
        loaders keep what the plan already read, completing the ``outcomes`` a mutation's
        root fields already had)."""
        operation = plan.operation
        executor = self.executor_class.build(
            self.graphql_schema,
            operation.node,
            context_value=context,
            raw_variable_values=variables,
            operation_name=operation.name,
            is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
        )
        result = await planned.run(plan, executor, outcomes)
        self.planner.count("planned" if result is not None else "fallback")
        return result

    async def _differential(
        self,
        plan: Plan,
        variables: dict[str, Any] | None,
        services: Services,
        caller: Caller,
    ) -> ExecutionResult:
        """The plan's answer, checked against graphql-core's in the same snapshot.

        Both run on one connection in one REPEATABLE READ transaction, so a concurrent
        writer cannot tell them apart; each has its own context (its own loaders), so
        graphql-core reads every row itself. When the plan falls back, or no snapshot
        can be had (no caller, the database busy or down), the request is answered as
        without the check: by graphql-core, on an ordinary context."""
        operation = plan.operation
        if operation.type is OperationType.MUTATION:
            return await self._differential_mutation(plan, variables, services, caller)
        trainer_id = caller.trainer_id if isinstance(caller, Principal) else None
        ours = theirs = None
        if trainer_id is None:
            ours = await self._planned(plan, variables, build_context(services, caller))
            if ours is not None:
                theirs = await self._run(operation, variables, build_context(services, caller))
        else:
            try:
                async with services.pool.acquire_as(trainer_id) as conn:
                    snapshot = conn.transaction(isolation="repeatable_read", readonly=True)
                    await snapshot.start()
                    try:
                        one = OneConnection(conn)
                        ours = await self._planned(
                            plan, variables, build_context(services, caller, one)
                        )
                        await one.close()
                        if ours is not None:
                            one = OneConnection(conn)
                            theirs = await self._run(
                                operation, variables, build_context(services, caller, one)
                            )
                            await one.close()
                    finally:
                        await _end_snapshot(snapshot)
            except UNAVAILABLE:
                if theirs is None:  # both answers read the snapshot: compare them anyway
                    ours = None
            except asyncpg.ActiveSQLTransactionError:
                # The checked-out connection was still inside a transaction, server-side
                # (the pool resets it on release), so no snapshot could begin: the request
                # is answered without the check.
                log.warning("differential check skipped: connection already in a transaction")
                self.planner.count("unchecked")
                ours = None
        if ours is None or theirs is None:
            return await self._run(operation, variables, build_context(services, caller))
        check(
            ours,
            theirs,
            query=operation.text,
            operation_name=operation.name,
            variables=variables,
            record=services.settings.planner_mismatches,
        )
        return ours

    async def _differential_mutation(
        self,
        plan: Plan,
        variables: dict[str, Any] | None,
        services: Services,
        caller: Caller,
    ) -> ExecutionResult:
        """A planned mutation's answer, checked against graphql-core completing the same
        root outcomes (``planned.replay``: the change is made once, by the plan)."""
        operation = plan.operation
        context = build_context(services, caller)
        outcomes: dict[str, Any] = {}
        ours = await self._planned(plan, variables, context, outcomes)
        if ours is None:
            return await self._run(operation, variables, context, outcomes)
        theirs = await self._run(operation, variables, build_context(services, caller), outcomes)
        check(
            ours,
            theirs,
            query=operation.text,
            operation_name=operation.name,
            variables=variables,
            record=services.settings.planner_mismatches,
        )
        return ours

    async def _run(
        self,
        operation: Operation,
        variables: dict[str, Any] | None,
        context: Context,
        outcomes: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """graphql-core's answer; with ``outcomes``, a planned mutation's root fields are
        completed from them instead of run again (``planned.replay``)."""
        result = execute(
            self.graphql_schema,
            operation.node,
            variable_values=variables,
            operation_name=operation.name,
            context_value=context,
            middleware=[planned.replay(outcomes)] if outcomes else None,
            is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
            executor_class=self.executor_class,
        )
        if isawaitable(result):
            result = await result
        assert isinstance(result, ExecutionResult)
        if result.errors:
            result.errors = request_errors(result.data, result.errors)
        return result

    def subscription(
        self, operation: Operation, variables: dict[str, Any] | None, context: Context
    ) -> Executor[Any] | list[Any]:
        """graphql-core's executor for a subscription (the hub runs it per event), or the
        errors its variables raise (BAD_USER_INPUT)."""
        label = metrics.operation_label(operation.defined_name)
        metrics.graphql_requests.labels(label, operation.type.value).inc()
        executor = self.executor_class.build(
            self.graphql_schema,
            operation.node,
            context_value=context,
            raw_variable_values=variables,
            operation_name=operation.name,
            is_awaitable=optimized_is_awaitable,  # type: ignore[arg-type]
        )
        if isinstance(executor, list):
            metrics.graphql_errors.labels(label, BAD_USER_INPUT).inc(len(executor))
            return [with_code(error, BAD_USER_INPUT) for error in executor]
        return executor


async def _end_snapshot(snapshot: asyncpg.transaction.Transaction) -> None:
    """Roll the differential check's read-only snapshot back. When graphql-core cancelled
    a field's query on the connection (it cancels siblings of a failed non-null field),
    PostgreSQL may take the late cancel for the ROLLBACK: the pool's reset on release
    rolls back again, and the answers already read are still compared."""
    try:
        await snapshot.rollback()
    except (*UNAVAILABLE, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        log.warning("differential snapshot's rollback failed (%r): the pool resets it", error)


def _count(label: str, operation: Operation, started: float, codes: list[str | None]) -> None:
    metrics.graphql_duration.labels(label).observe(time.perf_counter() - started)
    metrics.graphql_requests.labels(label, operation.type.value).inc()
    for code in codes:
        metrics.graphql_errors.labels(label, metrics.code_label(code)).inc()
