"""The OpenAI-compatible HTTP server: ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /health`` and ``GET /metrics`` on Starlette, run by ``effreason serve``.

A thin composition of the one core: model ``effreason`` runs the cost-aware reasoning
graph through :class:`~effreason_agents.langchain.chat_model.ChatCostAware` (and its
single-call path for tools and structured output); ``effreason/<tier>`` makes one held
call on that tier through the attempt runner. Every call is held in the budget ledger
under the request, the virtual key (a user scope) and, when a thread id is given, the
key's thread.

::

    from effreason_agents.server import create_app
    app = create_app(load_config(), auth=True)   # any ASGI server runs it
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from effreason_agents.config import Config
from effreason_agents.core.budget import effective_budget
from effreason_agents.core.money import format_usd
from effreason_agents.core.records import Scope, Status
from effreason_agents.errors import (
    BudgetExhausted,
    ConfigError,
    EffReasonError,
    LedgerError,
    RequestError,
    StoreError,
    TierError,
)
from effreason_agents.server.metrics import ServerMetrics
from effreason_agents.server.protocol import (
    GRAPH_MODEL,
    ChatRequest,
    chunk_body,
    completion_body,
    error_body,
    finish_reason,
    parse_request,
    to_messages,
    tool_calls_json,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_THREADS",
    "PINNED_MAX_TOKENS",
    "SERVE_CONFIG_ENV",
    "SERVE_MAX_BODY_ENV",
    "SERVE_NO_AUTH_ENV",
    "Server",
    "app_from_environment",
    "create_app",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1_000_000
"""Largest request body accepted (413 above)."""
PINNED_MAX_TOKENS = 1024
"""Output cap of a pinned-tier call that names none (the hold's worst case needs one)."""
STREAM_PIECE_CHARS = 16
"""Characters per chunk when a settled answer is streamed."""
DEFAULT_THREADS = 128
"""Threads per worker process for graph requests and ledger work."""
_GRAPH_CACHE = 8
_THREADS_REMEMBERED = 10_000
_DONE = object()


@dataclass
class _Caller:
    """Who a request is charged to: the key's name for metrics, the user and thread scope keys."""

    label: str
    user_id: str | None
    thread_id: str | None
    key: Any = None  # the VirtualKey, when authenticated


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(body, default=str, separators=(",", ":")), status_code=status,
                    media_type="application/json", headers=dict(headers or {}))


def _error(exc: RequestError) -> Response:
    return _json(error_body(str(exc), type=exc.type, param=exc.param, code=exc.code), exc.status, exc.headers)


def _sse(body: Any) -> bytes:
    return b"data: " + json.dumps(body, default=str, separators=(",", ":")).encode() + b"\n\n"


class Server:
    """One worker process's server state: the reasoning graph and its services (tier
    clients, ledger, store), the virtual keys and the metrics."""

    def __init__(self, config: Config, *, auth: bool = True, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        from effreason_agents.engine.runner import AttemptRunner
        from effreason_agents.langchain.chat_model import ChatCostAware

        self.config = config
        self.auth = auth
        self.max_body_bytes = int(max_body_bytes)
        self.base = ChatCostAware(config=config)
        self.graph = self.base.reasoning_graph()
        self.services = self.graph.services
        self.runner = AttemptRunner(self.services)
        self.metrics = ServerMetrics.get()
        self._graphs: OrderedDict[int, Any] = OrderedDict()
        self._keys: Any = None
        self._background: set[asyncio.Task[Any]] = set()
        self._threads: OrderedDict[Scope, None] = OrderedDict()  # thread scopes whose limits are set

    # -- lifecycle ------------------------------------------------------------------
    @property
    def keys(self) -> Any:
        if self._keys is None:
            from effreason_agents.adapters.keys import KeyStore

            self._keys = KeyStore(self.config.ledger_target())
        return self._keys

    async def close(self) -> None:
        from effreason_agents.engine.runner import SETTLEMENTS

        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        left = await asyncio.to_thread(SETTLEMENTS.wait, 30.0)  # billed calls the ledger has not recorded yet
        if left:
            log.error("%d settlement(s) could not be written before exiting; their holds expire", left)
        for model in self._graphs.values():
            model.close()
        self.base.close()
        if self._keys is not None:
            self._keys.close()

    def warm(self) -> None:
        """Open the ledger, the keys and the outcome store (a database that cannot be reached
        stops the server here, with its reason), and build every usable tier's client (and
        start the embedded model) before the first request, so that a healthy ``/health``
        means a ready server. A tier that cannot start is logged and left for the request to
        report."""
        self.services.ledger
        self.services.store
        if self.auth:
            self.keys
        for name in self.tiers():
            try:
                self.services.clients[name].warm()
            except EffReasonError as exc:
                log.warning("tier %r is not ready: %s", name, exc)

    def tiers(self) -> list[str]:
        """The tiers a request can pin (enabled, with their key when they need one)."""
        return sorted(self.config.enabled_tiers(self.services.environ))

    def graph_model(self, max_tokens: int | None) -> Any:
        """The ChatCostAware whose graph caps every arm at ``max_tokens`` (the base one without)."""
        if max_tokens is None:
            return self.base
        model = self._graphs.get(max_tokens)
        if model is None:
            from effreason_agents.langchain.chat_model import ChatCostAware

            model = ChatCostAware(config=self.config, max_tokens=max_tokens)
            self._graphs[max_tokens] = model
            if len(self._graphs) > _GRAPH_CACHE:  # not closed: requests in flight may still use it;
                self._graphs.popitem(last=False)  # its ledger and store connections close with it
        else:
            self._graphs.move_to_end(max_tokens)
        return model

    # -- who is calling -------------------------------------------------------------
    async def caller(self, request: Request, req: ChatRequest | None = None) -> _Caller:
        """The virtual key of ``Authorization: Bearer``; 401 when missing, unknown or revoked."""
        if not self.auth:
            return _Caller("-", req.user if req else None, None)
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise RequestError(401, "missing API key: send 'Authorization: Bearer <key>' (create one with "
                               "`effreason keys create`)", type="invalid_request_error", code="invalid_api_key")
        key = await asyncio.to_thread(self.keys.authenticate, secret.strip())
        if key is None:
            raise RequestError(401, "incorrect API key provided", type="invalid_request_error", code="invalid_api_key")
        if key.revoked:
            raise RequestError(401, f"the API key {key.name!r} was revoked", type="invalid_request_error",
                               code="invalid_api_key")
        return _Caller(key.name, key.scope.key, None, key)

    async def with_thread(self, caller: _Caller, request: Request, req: ChatRequest) -> _Caller:
        thread = request.headers.get("x-effreason-thread") or req.options.thread_id
        if not thread:
            return caller
        if caller.key is None:
            caller.thread_id = thread
            return caller
        scope = caller.key.thread_scope(thread)
        caller.thread_id = scope.key
        limits = caller.key.thread_limits()
        if limits is not None and scope not in self._threads:  # the ledger keeps a scope's first limits
            await asyncio.to_thread(self.services.ledger.ensure_limits, {scope: limits})
            self._threads[scope] = None
            if len(self._threads) > _THREADS_REMEMBERED:
                self._threads.popitem(last=False)
        return caller

    async def admit(self, caller: _Caller) -> None:
        if caller.key is None or not caller.key.rpm:
            return
        ok, retry_after = await asyncio.to_thread(self.keys.admit, caller.key)
        if not ok:
            self.metrics.refused(caller.label, "rpm")
            raise RequestError(
                429, f"rate limit reached for key {caller.key.name!r}: {caller.key.rpm} requests per minute; "
                f"retry in {retry_after:.0f} s", type="requests", code="rate_limit_exceeded",
                headers={"retry-after": str(max(1, round(retry_after)))},
            )

    async def remaining(self, caller: _Caller) -> dict[str, str | None] | None:
        """What is left of the key's (user's) and thread's dollar budgets."""
        scopes = [(kind, key) for kind, key in (("user", caller.user_id), ("thread", caller.thread_id)) if key]
        if not scopes:
            return None

        def read() -> dict[str, str | None]:
            out: dict[str, str | None] = {}
            for kind, key in scopes:
                left = self.services.ledger.remaining(Scope(kind, key)).get("max_cost_usd") or {}  # type: ignore[arg-type]
                value = left.get("remaining")
                out[kind] = None if value is None else format_usd(Decimal(str(value)))
            return out

        try:
            return await asyncio.to_thread(read)
        except LedgerError as exc:  # an answer already paid for is not failed for a figure we cannot read
            log.warning("remaining budget unknown: %s", exc)
            return None

    async def quota_error(self, caller: _Caller, scope_kind: str | None, detail: str | None = None) -> RequestError:
        """429 ``insufficient_quota``: which budget ran out (``detail``: the ledger's account of
        it) and what is left of the key's and thread's dollars."""
        self.metrics.refused(caller.label, "budget")
        left = {k: v for k, v in (await self.remaining(caller) or {}).items() if v is not None}
        scope = scope_kind or "request"
        message = f"the {scope} budget cannot cover this request" + (f": {detail}" if detail else
                                                                      " (no arm's worst case fits what is left)")
        if left:
            message += "; remaining: " + ", ".join(f"{k} ${v}" for k, v in left.items())
        return RequestError(429, message, type="insufficient_quota", code="insufficient_quota")

    # -- the endpoint ---------------------------------------------------------------
    async def read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise RequestError(413, f"the request body is {declared} bytes; the limit is {self.max_body_bytes}")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > self.max_body_bytes:
                raise RequestError(413, f"the request body is over the limit of {self.max_body_bytes} bytes")
        return bytes(body)

    def pinned_tier(self, model: str) -> str | None:
        """``None`` for the graph, the tier for ``effreason/<tier>``; 404 otherwise."""
        if model == GRAPH_MODEL:
            return None
        prefix = GRAPH_MODEL + "/"
        tier = model[len(prefix):] if model.startswith(prefix) else None
        if tier is None or tier not in self.tiers():
            known = ", ".join([GRAPH_MODEL] + [prefix + t for t in self.tiers()])
            raise RequestError(404, f"the model {model!r} does not exist; known: {known}", param="model",
                               code="model_not_found")
        return tier

    async def chat_completions(self, request: Request) -> Response:
        started = time.perf_counter()
        model, tier, label, status = "-", None, "-", 500
        info: dict[str, Any] | None = None
        usage: dict[str, int] | None = None
        try:
            caller = await self.caller(request)
            label = caller.label
            req = parse_request(await self.read_body(request))
            model = req.model
            tier = self.pinned_tier(req.model)
            messages = to_messages(req.messages)
            if not self.auth:
                caller.user_id = req.user
            caller = await self.with_thread(caller, request, req)
            await self.admit(caller)
            if tier is not None:
                response = await self.pinned(request, req, tier, messages, caller)
            else:
                response = await self.reasoned(req, messages, caller)
            status = response.status_code
            info = getattr(response, "effreason_info", None)
            usage = getattr(response, "effreason_usage", None)
            tier = (info or {}).get("tier") or tier
            return response
        except RequestError as exc:
            status = exc.status
            return _error(exc)
        except (LedgerError, StoreError) as exc:  # the database went away: nothing was charged without a hold
            status = 503
            log.error("database unavailable: %s", exc)
            return _json(error_body(f"the budget database is unavailable, retry later: {exc}", type="server_error",
                                    code="database_unavailable"), 503)
        except Exception:  # noqa: BLE001 - a bug answers 500 in OpenAI's format, logged with its traceback
            log.exception("chat completion failed")
            return _json(error_body("internal server error; see the server log", type="server_error"), 500)
        finally:
            self.metrics.observe(model=model, tier=tier, key=label, status=status, seconds=time.perf_counter() - started)
            if info is not None:
                self.metrics.charged(tier=tier, key=label, info=info, usage=usage)

    # -- the cost-aware graph (model "effreason") -------------------------------------
    async def reasoned(self, req: ChatRequest, messages: list[BaseMessage], caller: _Caller) -> Response:
        from effreason_agents.langchain.chat_model import ChatCostAware

        opts = req.options
        base = self.graph_model(req.output_cap)
        model = ChatCostAware(graph=base.reasoning_graph(), user_id=caller.user_id, thread_id=caller.thread_id,
                              max_cost_usd=opts.max_cost_usd, confidence_threshold=opts.confidence_threshold,
                              stop=req.stops, max_tokens=req.output_cap, temperature=req.temperature)
        kwargs: dict[str, Any] = {}
        if req.tools:
            kwargs["tools"] = req.tools
            if req.tool_choice is not None:
                kwargs["tool_choice"] = req.tool_choice
            if req.parallel_tool_calls is not None:
                kwargs["parallel_tool_calls"] = req.parallel_tool_calls
        if req.response_format is not None and req.response_format.get("type") != "text":
            kwargs["response_format"] = req.response_format
        try:
            message = await model.ainvoke(messages, **kwargs)
        except BudgetExhausted as exc:
            raise await self.quota_error(caller, exc.scope_kind, str(exc)) from None
        except TierError as exc:
            raise _tier_unavailable(exc) from None
        except ConfigError as exc:
            raise RequestError(400, str(exc), param="effreason") from None
        except ValueError as exc:  # bad messages (no question, invisible text …)
            raise RequestError(400, str(exc), param="messages") from None
        meta = message.response_metadata or {}
        if meta.get("status") == Status.BUDGET_EXHAUSTED and not meta.get("arms_tried"):
            raise await self.quota_error(caller, meta.get("budget_scope"))
        if meta.get("status") == Status.FAILED and not meta.get("answered", True):
            raise _tier_unavailable(message.content)
        info = {
            "request_id": meta.get("request_id"),
            "tier": meta.get("tier"),
            "model": meta.get("model_name"),
            "arms_tried": list(meta.get("arms_tried") or []),
            "escalated": bool(meta.get("escalated")),
            "confidence": meta.get("confidence"),
            "status": str(meta.get("status")),
            "cost_usd": str(meta.get("cost_usd") or "0"),
            "remaining_usd": await self.remaining(caller),
        }
        return self.reply(req, message, info)

    # -- one held call on a pinned tier (model "effreason/<tier>") --------------------
    async def pinned(self, request: Request, req: ChatRequest, tier: str, messages: list[BaseMessage],
                     caller: _Caller) -> Response:
        from effreason_agents.engine import policy
        from effreason_agents.engine.pinned import PINNED_STRATEGY

        client = self.services.clients[tier]
        request_id = uuid.uuid4().hex
        opts = req.options
        budget = effective_budget(self.config.budget, opts.max_cost_usd)
        scopes, limits = policy.budget_scopes(self.config, request_id, budget, caller.thread_id, caller.user_id)
        max_tokens = req.output_cap or min(PINNED_MAX_TOKENS, self.config.context_window(tier) // 2)
        call: dict[str, Any] = dict(
            max_tokens=max_tokens, limits=limits, temperature=req.temperature or 0.0, stop=req.stops,
            tools=req.tools, tool_choice=req.tool_choice if req.tools else None,
            response_format=req.response_format if (req.response_format or {}).get("type") not in (None, "text") else None,
        )
        key = f"{request_id}:0"

        def describe(held: Any) -> dict[str, Any]:
            c = held.completion
            return {"request_id": request_id, "tier": tier, "model": c.model, "arms_tried": [f"{tier}:{PINNED_STRATEGY}"],
                    "escalated": False, "confidence": None,
                    "status": Status.ANSWERED.value if c.finish_reason != "cancelled" else "cancelled",
                    "cost_usd": format_usd(c.cost_usd)}

        if not req.stream:
            try:
                held = await self.runner.achat(key, scopes, client, messages, **call)
            except BudgetExhausted as exc:
                raise await self.quota_error(caller, exc.scope_kind, str(exc)) from None
            except TierError as exc:
                raise _tier_unavailable(exc) from None
            info = describe(held) | {"remaining_usd": await self.remaining(caller)}
            self._log_pinned(request_id, tier, messages, held, caller, max_tokens)
            return self.reply(req, self._message(held), info)

        queue: asyncio.Queue[Any] = asyncio.Queue()
        gone = asyncio.Event()
        watcher = asyncio.create_task(_disconnected(request, gone))
        task = asyncio.create_task(self.runner.achat(
            key, scopes, client, messages, on_text=queue.put_nowait, cancelled=gone.is_set, **call))
        self._background.add(task)
        task.add_done_callback(lambda t: (self._background.discard(t), queue.put_nowait(_DONE)))
        first = await queue.get()
        if first is _DONE:  # finished (or failed) before any text: answer as a whole
            watcher.cancel()
            try:
                held = task.result()
            except BudgetExhausted as exc:
                raise await self.quota_error(caller, exc.scope_kind, str(exc)) from None
            except TierError as exc:
                raise _tier_unavailable(exc) from None
            self._log_pinned(request_id, tier, messages, held, caller, max_tokens)
            info = describe(held) | {"remaining_usd": await self.remaining(caller)}
            return self.stream_settled(req, self._message(held), info)

        completion_id, created = f"chatcmpl-{request_id}", int(time.time())

        async def events() -> AsyncIterator[bytes]:
            try:
                yield _sse(chunk_body(completion_id, req.model, created, delta={"role": "assistant", "content": ""}))
                piece = first
                while piece is not _DONE:
                    yield _sse(chunk_body(completion_id, req.model, created, delta={"content": piece}))
                    piece = await queue.get()
                try:
                    held = task.result()
                except (BudgetExhausted, TierError, LedgerError) as exc:  # failed mid-stream: OpenAI's in-stream error
                    code = "database_unavailable" if isinstance(exc, LedgerError) else "tier_unavailable"
                    yield _sse(error_body(str(exc), type="server_error", code=code))
                    return
                self._log_pinned(request_id, tier, messages, held, caller, max_tokens)
                message = self._message(held)
                info = describe(held) | {"remaining_usd": await self.remaining(caller)}
                self.metrics.charged(tier=tier, key=caller.label, info=info, usage=_usage_json(message))
                tools = tool_calls_json(message)
                if tools:
                    yield _sse(chunk_body(completion_id, req.model, created, delta={"tool_calls": [
                        {"index": i, **tc} for i, tc in enumerate(tools)]}))
                yield _sse(chunk_body(completion_id, req.model, created, finish=finish_reason(message), info=info))
                if req.include_usage:
                    yield _sse(chunk_body(completion_id, req.model, created, usage=_usage_json(message)))
                yield b"data: [DONE]\n\n"
            finally:  # done, or the client went away: the runner stops the tier and settles what was generated
                gone.set()
                watcher.cancel()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"x-effreason-request-id": request_id, "cache-control": "no-cache"})

    @staticmethod
    def _message(held: Any) -> AIMessage:
        c = held.completion
        return AIMessage(
            c.text, tool_calls=[{"name": tc["name"], "args": tc.get("args") or {}, "id": tc.get("id"), "type": "tool_call"}
                                for tc in c.tool_calls or []],
            usage_metadata={"input_tokens": c.input_tokens, "output_tokens": c.output_tokens,
                            "total_tokens": c.input_tokens + c.output_tokens},
            response_metadata={"finish_reason": c.finish_reason, "model_name": c.model},
        )

    def _log_pinned(self, request_id: str, tier: str, messages: list[BaseMessage], held: Any, caller: _Caller,
                    max_tokens: int) -> None:
        """Record a pinned call in the outcome store, off the event loop (a failure is logged, not raised)."""
        from effreason_agents.engine.pinned import pinned_records

        request, attempts = pinned_records(self.config, request_id, tier, messages, held, max_tokens=max_tokens,
                                           thread_id=caller.thread_id, user_id=caller.user_id,
                                           config_version=self.services.config_version)

        def write() -> None:
            try:
                self.services.store.record(request, attempts)
            except EffReasonError as exc:
                log.error("outcome not logged: %s", exc)

        task = asyncio.get_running_loop().run_in_executor(None, write)
        self._background.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._background.discard)  # type: ignore[arg-type]

    # -- responses ------------------------------------------------------------------
    def reply(self, req: ChatRequest, message: AIMessage, info: dict[str, Any]) -> Response:
        if req.stream:
            return self.stream_settled(req, message, info)
        body = completion_body(f"chatcmpl-{info.get('request_id') or uuid.uuid4().hex}", req.model, message, info)
        response = _json(body, headers=_headers(info))
        response.effreason_info, response.effreason_usage = info, body["usage"]  # type: ignore[attr-defined]
        return response

    def stream_settled(self, req: ChatRequest, message: AIMessage, info: dict[str, Any]) -> Response:
        """A decided answer as an SSE stream: role, the text in pieces, tool calls, the finish
        chunk (with the ``effreason`` field) and, when asked, the usage chunk."""
        completion_id, created = f"chatcmpl-{info.get('request_id') or uuid.uuid4().hex}", int(time.time())
        text = message.text
        chunks = [chunk_body(completion_id, req.model, created, delta={"role": "assistant", "content": ""})]
        chunks += [chunk_body(completion_id, req.model, created, delta={"content": text[i:i + STREAM_PIECE_CHARS]})
                   for i in range(0, len(text), STREAM_PIECE_CHARS)]
        tools = tool_calls_json(message)
        if tools:
            chunks.append(chunk_body(completion_id, req.model, created,
                                     delta={"tool_calls": [{"index": i, **tc} for i, tc in enumerate(tools)]}))
        chunks.append(chunk_body(completion_id, req.model, created, finish=finish_reason(message), info=info))
        if req.include_usage:
            chunks.append(chunk_body(completion_id, req.model, created, usage=_usage_json(message)))

        async def events() -> AsyncIterator[bytes]:
            for c in chunks:
                yield _sse(c)
            yield b"data: [DONE]\n\n"

        response = StreamingResponse(events(), media_type="text/event-stream",
                                     headers={**_headers(info), "cache-control": "no-cache"})
        response.effreason_info, response.effreason_usage = info, _usage_json(message)  # type: ignore[attr-defined]
        return response

    # -- the other endpoints ----------------------------------------------------------
    async def models(self, request: Request) -> Response:
        try:
            await self.caller(request)
        except RequestError as exc:
            return _error(exc)
        created = 0
        data = [{"id": GRAPH_MODEL, "object": "model", "created": created, "owned_by": "effreason"}]
        for t in self.tiers():
            data.append({"id": f"{GRAPH_MODEL}/{t}", "object": "model", "created": created, "owned_by": "effreason",
                         "effreason": {"tier": t, "model": self.config.tiers[t].model,
                                       "engine": self.config.tiers[t].engine}})
        return _json({"object": "list", "data": data})

    async def health(self, request: Request) -> Response:
        def check() -> dict[str, Any]:
            out: dict[str, Any] = {}
            for name, open_ in (("ledger", lambda: self.services.ledger), ("store", lambda: self.services.store)):
                try:
                    open_().applied_migrations()
                    out[name] = {"ok": True}
                except EffReasonError as exc:
                    out[name] = {"ok": False, "error": str(exc)}
            return out

        parts = await asyncio.to_thread(check)
        enabled = set(self.tiers())
        tiers = {t: {"usable": t in enabled, "engine": c.engine, "model": c.model} for t, c in self.config.tiers.items()}
        ok = all(p["ok"] for p in parts.values()) and bool(enabled)
        return _json({"status": "ok" if ok else "unavailable", "tiers": tiers, **parts}, 200 if ok else 503)

    async def metrics_endpoint(self, request: Request) -> Response:
        body, content_type = self.metrics.exposition()
        return Response(body, media_type=content_type)


def _tier_unavailable(why: object) -> RequestError:
    return RequestError(503, f"no tier could answer: {why}", type="server_error", code="tier_unavailable")


async def _disconnected(request: Request, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client closes the connection (the body has been read, so the
    next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


def _usage_json(message: AIMessage) -> dict[str, int]:
    u = message.usage_metadata or {}
    i, o = int(u.get("input_tokens") or 0), int(u.get("output_tokens") or 0)
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


def _headers(info: Mapping[str, Any]) -> dict[str, str]:
    out = {
        "x-effreason-request-id": str(info.get("request_id") or ""),
        "x-effreason-arms": ",".join(info.get("arms_tried") or []),
        "x-effreason-escalated": "true" if info.get("escalated") else "false",
        "x-effreason-status": str(info.get("status") or ""),
        "x-effreason-cost-usd": str(info.get("cost_usd") or "0"),
    }
    if info.get("confidence") is not None:
        out["x-effreason-confidence"] = str(info["confidence"])
    left = info.get("remaining_usd") or {}
    for kind in ("user", "thread"):
        if left.get(kind) is not None:
            out[f"x-effreason-remaining-{kind}-usd"] = str(left[kind])
    return out


def create_app(config: Config, *, auth: bool = True, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               threads: int = DEFAULT_THREADS) -> Starlette:
    """The ASGI app for ``config``. With ``auth`` every request needs a virtual key
    (``effreason keys create``); without it requests are charged to the ``user`` they name.
    ``threads``: how many requests may wait on a tier at once in this process."""
    import contextlib

    server = Server(config, auth=auth, max_body_bytes=max_body_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # graph requests and ledger work run in threads: enough of them that requests waiting
        # on a slow tier do not queue behind each other (asyncio's default is cores + 4)
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="effreason")
        asyncio.get_running_loop().set_default_executor(pool)
        await asyncio.to_thread(server.warm)
        yield
        await server.close()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
            Route("/v1/models", server.models, methods=["GET"]),
            Route("/health", server.health, methods=["GET"]),
            Route("/metrics", server.metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.server = server
    return app


SERVE_CONFIG_ENV = "EFFREASON_SERVE_CONFIG"
SERVE_NO_AUTH_ENV = "EFFREASON_SERVE_NO_AUTH"
SERVE_MAX_BODY_ENV = "EFFREASON_SERVE_MAX_BODY_BYTES"


def app_from_environment() -> Starlette:
    """The app of each ``effreason serve`` worker process: the config file named by
    ``$EFFREASON_SERVE_CONFIG`` (else :func:`~effreason_agents.config.load_config`'s
    default), without keys when ``$EFFREASON_SERVE_NO_AUTH`` is ``1``."""
    import os
    from pathlib import Path

    from effreason_agents.config import load_config

    path = os.environ.get(SERVE_CONFIG_ENV) or None
    limit = int(os.environ.get(SERVE_MAX_BODY_ENV) or DEFAULT_MAX_BODY_BYTES)
    return create_app(load_config(Path(path) if path else None), auth=os.environ.get(SERVE_NO_AUTH_ENV) != "1",
                      max_body_bytes=limit)
