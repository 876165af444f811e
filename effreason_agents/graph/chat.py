"""A multi-turn chat graph over the cost-aware reasoning graph, with per-thread budgets.

::

    messages ─▶ respond ─▶ AIMessage (+ one ``turns`` record)
                  │
                  └─ runs the reasoning graph on the last human message, with
                     ``ReasoningContext(thread_id=…, user_id=…)`` so every model call
                     reserves against the request, thread and user budgets

The thread id is the usual ``config["configurable"]["thread_id"]``; the user and an
optional thread budget come in the run's context (:class:`ChatContext`)::

    from effreason_agents.graph.chat import ChatContext, build_chat_graph
    chat = build_chat_graph()                     # SQLite checkpointer beside the outcome store
    out = chat.invoke(
        {"messages": [("user", "What is 2 + 3?")]},
        {"configurable": {"thread_id": "t1"}},
        context=ChatContext(user_id="ann", budget_usd="0.01"),
    )
    out["messages"][-1].content, out["messages"][-1].response_metadata["remaining"]

When a budget has no room for another model call, the reply is a polite refusal
(``response_metadata["status"] == "budget_exhausted"``) and nothing is spent.
"""

from __future__ import annotations

import operator
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Annotated, Iterator, Mapping

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from effreason_agents.config import Config, LimitConfig, load_config
from effreason_agents.core.budget import dollar_limit
from effreason_agents.core.messages import message_text, question_with_history
from effreason_agents.core.text import is_postgres_url, redact, redact_url
from effreason_agents.errors import ConfigError, InvalidQuestionError
from effreason_agents.graph.state import ReasoningContext, context_of

__all__ = [
    "ChatContext",
    "ChatState",
    "budget_remaining",
    "build_chat_graph",
    "checkpoint_path",
    "ensure_limits",
    "open_checkpointer",
    "refusal_text",
    "validate_context",
]


SCOPE_KINDS = ("thread", "user")


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    turns: Annotated[list[dict[str, Any]], operator.add]
    """One JSON-plain record per turn: question, status, cost_usd, output_tokens, arms, remaining…"""


class ChatInput(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


@dataclass
class ChatContext:
    """Per-run settings of the chat graph: ``chat.invoke(..., context=ChatContext(...))``
    (or a dict with these keys). The thread id comes from ``configurable.thread_id``."""

    user_id: str | None = None
    """Charge model calls to this user's budget too."""
    budget_usd: str | float | None = None
    """Set the thread's dollar limit (kept in the budget ledger for later turns)."""
    max_cost_usd: str | float | None = None
    """A dollar limit for each request (the smaller of this and the config's wins)."""


def _chat_ctx(runtime: Runtime[ChatContext] | None) -> ChatContext:
    return validate_context(getattr(runtime, "context", None))


def validate_context(ctx: ChatContext | Mapping[str, Any] | None) -> ChatContext:
    """The chat context as a :class:`ChatContext`, its amounts checked (:class:`ConfigError`)."""
    ctx = context_of(ChatContext, ctx, "chat context")
    if ctx.budget_usd is not None:
        dollar_limit(ctx.budget_usd, "budget_usd")
    if ctx.max_cost_usd is not None:
        dollar_limit(ctx.max_cost_usd, "max_cost_usd")
    return ctx


# -- persistence ----------------------------------------------------------------------


def checkpoint_path(config: Config) -> Path:
    """The chat checkpoints' SQLite file: ``checkpoints.sqlite`` beside the outcome store."""
    return config.store.resolved_path().with_name("checkpoints.sqlite")


def open_checkpointer(config: Config, path: str | Path | None = None) -> Any:
    """The chat's checkpointer: LangGraph's :class:`~langgraph.checkpoint.postgres.PostgresSaver`
    on the configured PostgreSQL database (:meth:`Config.database_url`, shared by every
    process and replica), else a :class:`~langgraph.checkpoint.sqlite.SqliteSaver` on
    ``path`` (default :func:`checkpoint_path`). Close it with ``saver.conn.close()``."""
    url = str(path) if path is not None and is_postgres_url(str(path)) else (
        config.database_url() if path is None else None)
    if url:
        return _postgres_checkpointer(url)
    from langgraph.checkpoint.sqlite import SqliteSaver

    p = Path(path) if path is not None else checkpoint_path(config)
    p.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(p), check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()
    return saver


def _postgres_checkpointer(url: str) -> Any:
    try:
        import psycopg
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg.rows import dict_row
    except ImportError as exc:  # pragma: no cover - both are dependencies
        raise ConfigError(f"PostgreSQL checkpoints need psycopg and langgraph-checkpoint-postgres ({exc})") from exc
    try:
        conn = psycopg.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row, connect_timeout=10)
    except psycopg.Error as exc:
        raise ConfigError(f"cannot reach PostgreSQL at {redact_url(url)} for the chat checkpoints: "
                          f"{redact(str(exc), [url])}; check the URL and that the server is running") from None
    saver = PostgresSaver(conn)
    saver.setup()  # LangGraph's own migrations, safe when several processes start at once
    return saver


# -- budget ledger --------------------------------------------------------------------


def _ledger_module() -> Any:
    try:
        from effreason_agents.adapters import ledger
    except ImportError:  # pragma: no cover - the ledger ships with the library
        return None
    return ledger


@contextmanager
def _open_ledger(config: Config) -> Iterator[Any]:
    mod = _ledger_module()
    if mod is None:
        yield None
        return
    target = config.ledger_target()
    if isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
    ledger = mod.BudgetLedger(target)
    try:
        yield ledger
    finally:
        ledger.close()


def _has_limits(limits: Any) -> bool:
    if limits is None:
        return False
    if isinstance(limits, Mapping):
        return any(v is not None for v in limits.values())
    if isinstance(limits, LimitConfig):
        return any(getattr(limits, f) is not None for f in LimitConfig.model_fields)
    return bool(limits)


def _limits_set(ledger: Any, scope: Any) -> bool:
    try:
        return _has_limits(ledger.limits(scope))
    except (KeyError, LookupError):
        return False


def ensure_limits(
    ledger: Any,
    config: Config,
    thread_id: str | None,
    user_id: str | None,
    budget_usd: str | float | Decimal | None = None,
) -> None:
    """Give the thread and user scopes their limits in ``ledger``.

    ``budget_usd`` (when given) sets the thread's dollar limit, on top of the config's
    ``budget.thread`` token limits. Otherwise the config's ``budget.thread`` and
    ``budget.user`` limits are applied to scopes that have none yet, so a limit set
    earlier (e.g. by ``--budget-usd``) survives later turns that do not repeat it.
    """
    from effreason_agents.adapters.ledger import Scope

    if thread_id is not None:
        scope = Scope("thread", thread_id)
        if budget_usd is not None:
            limit = dollar_limit(budget_usd, "budget_usd")
            ledger.set_limits(scope, config.budget.thread.model_copy(update={"max_cost_usd": limit}))
        elif _has_limits(config.budget.thread) and not _limits_set(ledger, scope):
            ledger.set_limits(scope, config.budget.thread)
    if user_id is not None:
        scope = Scope("user", user_id)
        if _has_limits(config.budget.user) and not _limits_set(ledger, scope):
            ledger.set_limits(scope, config.budget.user)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        from effreason_agents.core.money import format_usd

        return format_usd(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def budget_remaining(ledger: Any, thread_id: str | None, user_id: str | None) -> dict[str, Any]:
    """``{"thread": {limit_name: {"limit", "used", "reserved", "remaining"}}, "user": {...}}``,
    JSON-plain (money as decimal strings); scopes without an id are left out."""
    if ledger is None:
        return {}
    from effreason_agents.adapters.ledger import Scope

    out: dict[str, Any] = {}
    for kind, key in (("thread", thread_id), ("user", user_id)):
        if key is not None:
            out[kind] = _plain(ledger.remaining(Scope(kind, key)))
    return out


def cost_limit(remaining: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """The dollar entry of one scope in :func:`budget_remaining`'s answer, if it has one."""
    for name, entry in (remaining.get(kind) or {}).items():
        if "cost" in name and isinstance(entry, Mapping) and entry.get("limit") is not None:
            return dict(entry)
    return None


def _usd(value: Any) -> str:
    d = Decimal(str(value))
    return f"${d:.4f}" if d >= Decimal("0.0001") or d == 0 else f"${d:.6f}"


def _fmt(name: str, value: Any) -> str:
    return _usd(value) if "cost" in name else f"{value} tokens"


def _tightest(remaining: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    """The (scope kind, limit name, entry) closest to its limit."""
    best: tuple[Decimal, str, str, dict[str, Any]] | None = None
    for kind in SCOPE_KINDS:
        for name, entry in (remaining.get(kind) or {}).items():
            if not isinstance(entry, Mapping) or entry.get("limit") in (None, 0, "0"):
                continue
            limit = Decimal(str(entry["limit"]))
            used = Decimal(str(entry.get("used") or 0)) + Decimal(str(entry.get("reserved") or 0))
            ratio = used / limit
            if best is None or ratio > best[0]:
                best = (ratio, kind, name, dict(entry))
    return None if best is None else best[1:]


def refusal_text(remaining: Mapping[str, Any], reason: str | None = None) -> str:
    """The reply when the budget has no room for another model call."""
    tight = _tightest(remaining)
    if tight is None:
        why = f" ({reason})" if reason else ""
        return f"I can't answer this within the budget for one request{why}. Try a shorter question or a larger limit."
    kind, name, entry = tight
    spent = f"{_fmt(name, entry.get('used') or 0)} of {_fmt(name, entry['limit'])}"
    left = entry.get("remaining")
    if left not in (None, 0, "0") and Decimal(str(left)) > 0:
        spent += f"; the {_fmt(name, left)} left can't cover another answer"
    if kind == "thread":
        return f"This conversation has used its budget ({spent}). I can't answer more questions here."
    return f"You have used your budget ({spent}). I can't answer more questions right now."


# -- the graph ------------------------------------------------------------------------


class _ChatNodes:
    def __init__(self, config: Config, reasoning_graph: Any, use_ledger: bool) -> None:
        self.config = config
        self.reasoning_graph = reasoning_graph
        self.use_ledger = use_ledger

    @contextmanager
    def _ledger(self) -> Iterator[Any]:
        if not self.use_ledger:
            yield None
            return
        with _open_ledger(self.config) as ledger:
            yield ledger

    def respond(self, state: ChatState, config: RunnableConfig, runtime: Runtime[ChatContext]) -> dict[str, Any]:
        ctx = _chat_ctx(runtime)
        messages = list(state.get("messages") or [])
        if not messages or not isinstance(messages[-1], HumanMessage):
            raise InvalidQuestionError("the chat needs a user message to answer: send {'messages': [('user', 'your question')]}")
        question = message_text(messages[-1]).strip()
        if not question:
            raise InvalidQuestionError("the message is empty: ask a question")
        thread_id = (config.get("configurable") or {}).get("thread_id")
        thread_id = None if thread_id is None else str(thread_id)

        with self._ledger() as ledger:
            if ledger is not None:
                ensure_limits(ledger, self.config, thread_id, ctx.user_id, ctx.budget_usd)
        out = self.reasoning_graph.invoke(
            {"question": question_with_history(messages[:-1], question)},
            context=ReasoningContext(thread_id=thread_id, user_id=ctx.user_id, max_cost_usd=ctx.max_cost_usd),
        )
        result = out["result"]
        with self._ledger() as ledger:
            remaining = budget_remaining(ledger, thread_id, ctx.user_id)

        status = result.get("status")
        answer = result.get("answer")
        if status == "budget_exhausted" and answer is None:
            content = refusal_text(remaining, result.get("reason"))
        elif answer is None:
            content = f"I couldn't find an answer: {result.get('reason') or 'no arm answered'}."
        else:
            content = str(answer)
        attempts = result.get("attempts") or []
        final = result.get("final_attempt")
        model = attempts[final].get("model") if isinstance(final, int) and 0 <= final < len(attempts) else None
        cost = str(result.get("total_cost_usd") or "0")
        in_tok = int(result.get("total_input_tokens") or 0)
        out_tok = int(result.get("total_output_tokens") or 0)
        meta: dict[str, Any] = {
            "status": status,
            "answered": answer is not None,
            "cost_usd": cost,
            "input_tokens": in_tok,
            "output_tokens": out_tok,
            "arms": list(result.get("arms_tried") or [a.get("arm") for a in attempts]),
            "confidence": result.get("confidence"),
            "request_id": result.get("request_id"),
            "reason": result.get("reason"),
            "remaining": remaining,
            "model_name": model,
        }
        reply = AIMessage(
            content=content,
            response_metadata=meta,
            usage_metadata={"input_tokens": in_tok, "output_tokens": out_tok, "total_tokens": in_tok + out_tok},
        )
        turn = {
            "turn": len(state.get("turns") or []),
            "question": question,
            "request_id": result.get("request_id"),
            "status": status,
            "answer": answer,
            "cost_usd": cost,
            "input_tokens": in_tok,
            "output_tokens": out_tok,
            "arms": meta["arms"],
            "remaining": remaining,
        }
        return {"messages": [reply], "turns": [turn]}


def build_chat_graph(
    config: Config | None = None,
    *,
    checkpointer: Any = None,
    services: Any = None,
    reasoning_graph: Any = None,
    use_ledger: bool = True,
) -> Any:
    """Compile the chat graph.

    ``checkpointer``: ``None`` (default) opens a SQLite checkpointer on
    :func:`checkpoint_path`, so threads survive restarts; ``False`` compiles without one
    (LangGraph Server, or a parent graph, supplies its own); anything else is used as is.
    ``reasoning_graph``: anything with ``.invoke({"question": ...}, context=ReasoningContext)``
    returning ``{"result": {...}}``; default :func:`~effreason_agents.graph.builder.build_reasoning_graph`
    (built without a checkpointer of its own: each turn is one stateless request).
    ``use_ledger``: read and set limits in the budget ledger (``config.ledger_path()``).
    """
    config = config or load_config()
    if reasoning_graph is None:
        from effreason_agents.graph.builder import build_reasoning_graph

        reasoning_graph = build_reasoning_graph(config, services=services, checkpointer=False)
    if checkpointer is None:
        checkpointer = open_checkpointer(config)
    elif checkpointer is False:
        checkpointer = None
    nodes = _ChatNodes(config, reasoning_graph, use_ledger)
    g = StateGraph(ChatState, context_schema=ChatContext, input_schema=ChatInput)
    g.add_node("respond", nodes.respond)
    g.add_edge(START, "respond")
    g.add_edge("respond", END)
    compiled = g.compile(checkpointer=checkpointer, name="effreason-chat")
    compiled.reasoning_graph = reasoning_graph  # type: ignore[attr-defined]
    compiled.chat_config = config  # type: ignore[attr-defined]
    return compiled


def thread_budget(config: Config, thread_id: str, user_id: str | None = None) -> dict[str, Any]:
    """What remains of the thread's (and user's) budget, read from the ledger."""
    with _open_ledger(config) as ledger:
        return budget_remaining(ledger, thread_id, user_id)


def close_chat_graph(graph: Any) -> None:
    """Close what :func:`build_chat_graph` opened: the checkpointer and the outcome store."""
    saver = getattr(graph, "checkpointer", None)
    conn = getattr(saver, "conn", None)
    if conn is not None and callable(getattr(conn, "close", None)):
        conn.close()  # sqlite3 or psycopg
    services = getattr(getattr(graph, "reasoning_graph", None), "services", None)
    if services is not None and hasattr(services, "close"):
        services.close()

