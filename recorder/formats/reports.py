"""The ``--json`` output of every report, as pydantic v2 models.

Guarantees: each command's ``--json`` document validates against its model
here before it is printed (see :func:`recorder.cli.app.emit_json`), so the
published JSON Schemas (``codetape schema NAME``) describe exactly what
scripts receive. Models forbid unknown keys: a field added to an output
without its model fails the tests. Money is a decimal string ("0.03"), never
a float; times are integer nanoseconds since the epoch (``*_ns``) or
milliseconds (``*_ms``, floats).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

__all__ = [
    "AuditReport",
    "ChunksReport",
    "ContainersAdvice",
    "ContainersReport",
    "CostReport",
    "DiffReport",
    "ErrorReport",
    "SessionDetail",
    "SessionList",
    "StagesReport",
    "TapeVerification",
    "Verification",
]

Money = str
"""A decimal amount in USD, as a string (``"0.03081907"``)."""


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


_BEHIND = Field(
    description="Events the stored projections are behind the log; the report folded them in."
)


# -- sessions / show -------------------------------------------------------------


class SessionRow(_Out):
    id: str
    name: str
    labels: dict[str, str]
    opened_at: str = Field(description="UTC, YYYY-MM-DD HH:MM:SS")
    closed: bool
    exchanges: int
    source: dict[str, Any] | None = Field(description="Where an imported session came from.")
    partial: Any = Field(description="Set when the session was imported from a partial tape.")


class SessionList(RootModel[list[SessionRow]]):
    """``codetape sessions --json``: the sessions in the log, oldest first."""


class ShowEvent(_Out):
    position: int
    seq: int
    kind: str
    bytes: int
    offset_ms: float | None
    type: str | None = Field(None, description="SSE event type (SSE events only).")
    sequence_number: int | None = None
    meta: dict[str, Any] | None = Field(
        None, description="Request, response head and exchange end only; headers left out."
    )


class ShowExchange(_Out):
    id: str
    method: str
    url: str
    status: int | None
    outcome: str | None
    reason: str | None
    events: list[ShowEvent]


class SessionDetail(_Out):
    """``codetape show SESSION --json``: a session's exchanges and their events."""

    id: str
    name: str
    labels: dict[str, str]
    metadata: dict[str, Any]
    source: dict[str, Any] | None
    opened_at: str
    closed: bool
    exchanges: list[ShowExchange]


# -- chunks / stages / audit -----------------------------------------------------


class ChunkRow(_Out):
    position: int
    part: int
    exchange_id: str | None
    response_id: str | None
    output: str = Field(description="Text delta (empty for metadata-only chunks).")
    metadata: dict[str, Any] = Field(
        description='Stage metadata: {"code_interpreter": {"stage": ..., "data": {...}}} and more.'
    )


class ChunksReport(_Out):
    """``codetape chunks SESSION --json``: the stream as chunks."""

    session_id: str
    chunks: list[ChunkRow]
    projections_behind: int = _BEHIND


class Arrivals(_Out):
    started: float | None
    in_progress: float | None
    first_code_delta: float | None
    code_done: float | None
    interpreting: float | None
    completed: float | None
    output_item_done: float | None


class CoarseTiming(_Out):
    source: str
    response_created_at: int | float | None
    response_completed_at: int | float | None


class StageRow(_Out):
    session_id: str
    exchange_id: str | None
    response_id: str | None
    call_id: str
    container_id: str | None
    status: str | None
    streamed: bool
    timing: str
    arrivals_ms: Arrivals = Field(description="Milliseconds from the request, per stage.")
    code_generation_ms: float | None
    execution_ms: float | None
    code_deltas: int
    coarse: CoarseTiming


class StagesReport(_Out):
    """``codetape stages SESSION --json``: per code interpreter call, its stage timeline."""

    session_id: str
    calls: list[StageRow]
    projections_behind: int = _BEHIND


class LogPositions(_Out):
    first: int
    last: int
    vouching: list[int] = Field(description="The log positions the code and outputs come from.")


class AuditRow(_Out):
    session_id: str
    exchange_id: str | None
    response_id: str | None
    call_id: str
    container_id: str | None
    status: str | None
    code: str
    outputs: list[dict[str, Any]] | None
    outputs_recorded: bool
    started_at_ns: int | None
    finished_at_ns: int | None
    log_positions: LogPositions


class AuditReport(_Out):
    """``codetape audit [SESSION] --json``: every piece of code that ran, in log order."""

    session_id: str | None
    entries: list[AuditRow]
    projections_behind: int = _BEHIND


# -- cost ------------------------------------------------------------------------


class CostGroup(_Out):
    key: str
    exchanges: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    token_cost: Money
    containers: int
    container_fees: Money
    total: Money
    basis: str


class CostExchange(_Out):
    exchange_id: str
    session_id: str
    response_id: str | None
    day: str
    model: str | None
    status: str | None
    input_tokens: int | None
    cached_tokens: int | None
    output_tokens: int | None
    reasoning_tokens: int | None
    token_cost: Money | None
    token_basis: str
    token_rule: str
    code_interpreter_calls: int
    containers: list[str]


class CostContainer(_Out):
    container_id: str
    memory: str | None
    created_via: str | None
    charged: bool
    charged_to_exchange: str | None
    session_id: str | None
    day: str | None
    fee: Money | None
    fee_basis: str
    fee_rule: str


class CostUnattributed(_Out):
    exchange_id: str
    session_id: str
    response_id: str | None
    day: str
    memory: str
    status: str | None
    possible_fee: Money | None
    rule: str


class FeeTableRef(_Out):
    source: str
    as_of: str


class CostReport(_Out):
    """``codetape cost --json``: token cost and container fees, each marked exact or estimated."""

    by: str
    groups: list[CostGroup]
    total: CostGroup
    exchanges: list[CostExchange]
    containers: list[CostContainer]
    possible_unattributed_containers: list[CostUnattributed]
    possible_unattributed_fees: Money
    fee_table: FeeTableRef
    projections_behind: int = _BEHIND


# -- containers ------------------------------------------------------------------


class ContainerFileRow(_Out):
    file_id: str
    filename: str | None
    source: str | None
    bytes: int | None


class ContainerRow(_Out):
    container_id: str
    memory: str | None = Field(description="Memory tier (1g, 4g, ...); null: not recorded.")
    created_via: str
    created_exchange_id: str | None
    session_id: str
    created_at_ns: int | None
    first_activity_ns: int
    last_activity_ns: int
    expires_after_minutes: int | None
    deleted_at_ns: int | None
    code_interpreter_calls: int
    exchanges: int
    files: list[ContainerFileRow]
    at_ns: int
    state: str
    reusable: bool
    expires_at_ns: int | None


class ContainersReport(_Out):
    """``codetape containers --json``: every container seen, judged at ``at_ns``."""

    at_ns: int
    containers: list[ContainerRow]
    projections_behind: int = _BEHIND


class AdviceTotalRow(_Out):
    key: str
    containers: int
    fees: Money
    avoidable_containers: int
    avoidable_fees: Money
    unknown_fees: int
    basis: str


class AvoidableRow(_Out):
    container_id: str
    memory: str
    group: str
    session_id: str | None
    day: str
    created_at_ns: int
    created_via: str | None
    exchange_id: str | None
    request_position: int | None
    response_id: str | None
    call_ids: list[str]
    could_reuse: str | None
    could_reuse_response_id: str | None
    could_reuse_expires_at_ns: int | None
    fee: Money | None
    avoidable_fee: Money | None
    basis: str
    rule: str
    suggestion: str


class UnattributedAdvice(_Out):
    exchange_id: str
    session_id: str | None
    group: str
    day: str
    memory: str
    request_position: int | None
    response_id: str | None
    possible_fee: Money | None
    rule: str
    could_reuse: str | None


class ContainersAdvice(_Out):
    """``codetape containers --advise --json``: containers that reuse would have avoided."""

    by: str
    idle_minutes: int | None
    rule: str
    total: AdviceTotalRow
    groups: list[AdviceTotalRow]
    days: list[AdviceTotalRow]
    avoidable_containers: list[AvoidableRow]
    possible_unattributed_containers: list[UnattributedAdvice]
    possible_unattributed_fees: Money
    fee_table: FeeTableRef
    projections_behind: int = _BEHIND


# -- verify / diff / errors ------------------------------------------------------


class PositionProblem(_Out):
    position: int
    message: str


class OpenExchange(_Out):
    exchange: str
    session: str
    lease: Literal["live", "expired"] | None
    lease_expires_in_s: float | None
    recorder_process: Literal["alive", "dead", "unknown"] | None
    repairable: bool


class CheckpointCheck(_Out):
    source: str
    position: int
    ok: bool
    message: str


class ArchiveFileProblem(_Out):
    file: str
    position: int | None
    message: str


class ArchiveVerification(_Out):
    """``verify --archive DIR``: the sealed archive files, chained from the genesis to the log."""

    directory: str
    files: int
    rows: int
    problems: list[ArchiveFileProblem]


class ProjectionVerification(_Out):
    name: str
    status: Literal["ok", "differs", "not_built", "other_version", "archived", "no_access"] = Field(
        description="ok / differs: its rows and state checked against the log up to "
        "`position`; the others: not checked, and why."
    )
    position: int = Field(description="The checkpoint checked up to (0: not checked).")
    problems: list[str]


class Verification(_Out):
    """``codetape verify --json`` (the log): the hash chain re-derived, and what is left open."""

    ok: bool
    checked: int
    start_position: int = Field(
        description="The first position checked: past 1 when older rows are archived."
    )
    head_position: int
    head_hash: str
    first_bad_position: int | None
    problems: list[PositionProblem]
    open_exchanges: list[str]
    open_exchange_sessions: list[OpenExchange]
    capture_gaps: int
    checkpoints: list[CheckpointCheck]
    archive: ArchiveVerification | None = Field(
        description="With --archive: the archive files' check (null without it)."
    )
    projections: list[ProjectionVerification] | None = Field(
        description="The projection tables checked against the log (null with "
        "--no-projections, or when the chain itself failed)."
    )


class TapeProblem(_Out):
    where: str
    position: int | None
    message: str


class TapeCheckpointCheck(_Out):
    source: str
    position: int
    ok: bool
    covered: int
    not_covered: int
    message: str


class TapeVerification(_Out):
    """``codetape verify TAPE --json``: a tape's rows checked, and its checkpoints."""

    ok: bool
    rows: int
    problems: list[TapeProblem]
    carries_checkpoint: bool
    checkpoints: list[TapeCheckpointCheck]


class FieldChange(_Out):
    field: str
    old: Any
    new: Any


class ExchangeDiffRow(_Out):
    old: str | None = Field(description="The exchange in OLD, described; null if only in NEW.")
    new: str | None
    changes: list[FieldChange]


class DiffReport(_Out):
    """``codetape diff OLD NEW --json``: what changed between two recordings."""

    old: str
    new: str
    same: bool
    exchanges: list[ExchangeDiffRow]


class ErrorReport(BaseModel):
    """Any command's failure with ``--json``: one object on stderr (more keys may follow)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="The one-line message.")
