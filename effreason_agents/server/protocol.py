"""The OpenAI chat-completions wire format: request checking and conversion to LangChain
messages, and the response, stream-chunk and error bodies (pure functions; no I/O).

Every problem with a request becomes a :class:`~effreason_agents.errors.RequestError`
naming the offending parameter, raised before any model call or budget hold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from effreason_agents.core.messages import check_tool_messages
from effreason_agents.errors import RequestError

__all__ = [
    "GRAPH_MODEL",
    "ChatRequest",
    "EffreasonOptions",
    "completion_body",
    "chunk_body",
    "error_body",
    "finish_reason",
    "parse_request",
    "to_messages",
    "tool_calls_json",
]

GRAPH_MODEL = "effreason"
"""The model name of the cost-aware graph; ``effreason/<tier>`` pins one tier."""

_ROLES = {"system", "developer", "user", "assistant", "tool"}


class EffreasonOptions(BaseModel):
    """Per-request options, sent as ``extra_body={"effreason": {...}}``."""

    model_config = ConfigDict(extra="forbid")

    max_cost_usd: Decimal | None = Field(default=None, gt=0)
    confidence_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    thread_id: str | None = Field(default=None, min_length=1, max_length=200)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """A ``POST /v1/chat/completions`` body. Fields OpenAI defines that change nothing here
    (``seed``, ``presence_penalty`` …) are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(default=None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None
    effreason: EffreasonOptions | None = None

    @property
    def output_cap(self) -> int | None:
        """The smaller of ``max_completion_tokens`` and ``max_tokens`` (either may be unset)."""
        caps = [c for c in (self.max_completion_tokens, self.max_tokens) if c is not None]
        return min(caps) if caps else None

    @property
    def stops(self) -> list[str] | None:
        if self.stop is None:
            return None
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def options(self) -> EffreasonOptions:
        return self.effreason or EffreasonOptions()

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


def _param(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_request(raw: bytes) -> ChatRequest:
    """The checked request, or a 400 :class:`RequestError` naming the parameter."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = _param(err.get("loc") or ())
        raise RequestError(400, f"{param or 'body'}: {err.get('msg')}", param=param or None) from None
    if req.n is not None and req.n > 1:
        raise RequestError(400, "n > 1 is not supported: send one request per choice", param="n")
    if req.stop is not None and len(req.stops or []) > 4:
        raise RequestError(400, "stop takes at most 4 sequences", param="stop")
    if req.tool_choice is not None and not req.tools:
        if req.tool_choice != "none":
            raise RequestError(400, "tool_choice needs tools", param="tool_choice")
    if req.response_format is not None:
        kind = req.response_format.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise RequestError(400, f"response_format.type must be 'text', 'json_object' or 'json_schema', got {kind!r}",
                               param="response_format.type")
    for i, tool in enumerate(req.tools or []):
        fn = tool.get("function") if tool.get("type") == "function" else None
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
            raise RequestError(400, "each tool must be {'type': 'function', 'function': {'name': ..., 'parameters': ...}}",
                               param=f"tools[{i}]")
    return req


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RequestError(400, f"{where} must be a string or a list of content parts", param=where)
    out: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            raise RequestError(
                400, f"{where}[{j}]: content part type {kind!r} is not supported; send text parts only",
                param=f"{where}[{j}].type",
            )
        out.append(part["text"])
    return "".join(out)


def _tool_calls(raw: Any, where: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RequestError(400, f"{where} must be a list", param=where)
    calls = []
    for k, tc in enumerate(raw):
        fn = tc.get("function") if isinstance(tc, Mapping) else None
        if not isinstance(fn, Mapping) or not isinstance(tc.get("id"), str) or not isinstance(fn.get("name"), str):
            raise RequestError(400, f"{where}[{k}] must have an id and a function with a name", param=f"{where}[{k}]")
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            raise RequestError(400, f"{where}[{k}].function.arguments is not a JSON string",
                               param=f"{where}[{k}].function.arguments") from None
        calls.append({"name": fn["name"], "args": args if isinstance(args, dict) else {"value": args},
                      "id": tc["id"], "type": "tool_call"})
    return calls


def to_messages(raw: Sequence[Mapping[str, Any]]) -> list[BaseMessage]:
    """OpenAI ``messages`` as LangChain messages (system and developer → SystemMessage, user →
    HumanMessage, assistant → AIMessage with its tool calls, tool → ToolMessage)."""
    out: list[BaseMessage] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        role = m.get("role")
        if role not in _ROLES:
            raise RequestError(400, f"{where}.role must be one of {sorted(_ROLES)}, got {role!r}", param=f"{where}.role")
        text = _text(m.get("content"), f"{where}.content")
        if role in ("system", "developer"):
            out.append(SystemMessage(text))
        elif role == "user":
            out.append(HumanMessage(text, name=m.get("name")) if m.get("name") else HumanMessage(text))
        elif role == "assistant":
            out.append(AIMessage(text, tool_calls=_tool_calls(m.get("tool_calls"), f"{where}.tool_calls")))
        else:
            call_id = m.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise RequestError(400, f"{where} (role 'tool') needs a tool_call_id", param=f"{where}.tool_call_id")
            out.append(ToolMessage(text, tool_call_id=call_id))
    try:
        check_tool_messages(out)
    except ValueError as exc:
        raise RequestError(400, str(exc), param="messages") from None
    return out


def tool_calls_json(message: AIMessage) -> list[dict[str, Any]]:
    """The message's tool calls in OpenAI's ``tool_calls`` shape (arguments as JSON text)."""
    return [
        {"id": tc.get("id") or f"call_{i}", "type": "function",
         "function": {"name": tc["name"], "arguments": json.dumps(tc.get("args") or {})}}
        for i, tc in enumerate(message.tool_calls or [])
    ]


def _usage(message: AIMessage) -> dict[str, int]:
    u = message.usage_metadata or {}
    i, o = int(u.get("input_tokens") or 0), int(u.get("output_tokens") or 0)
    return {"prompt_tokens": i, "completion_tokens": o, "total_tokens": i + o}


def finish_reason(message: AIMessage) -> str:
    if message.tool_calls:
        return "tool_calls"
    reason = (message.response_metadata or {}).get("finish_reason") or "stop"
    return reason if reason in ("stop", "length", "content_filter") else "stop"


def completion_body(
    completion_id: str, model: str, message: AIMessage, info: Mapping[str, Any], created: int | None = None
) -> dict[str, Any]:
    """A ``chat.completion`` object for ``message``; ``info`` becomes its ``effreason`` field."""
    tool_calls = tool_calls_json(message)
    reply: dict[str, Any] = {"role": "assistant", "content": message.text if not tool_calls or message.text else None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": reply, "logprobs": None, "finish_reason": finish_reason(message)}],
        "usage": _usage(message),
        "effreason": dict(info),
    }


def chunk_body(
    completion_id: str, model: str, created: int, *, delta: Mapping[str, Any] | None = None,
    finish: str | None = None, usage: Mapping[str, int] | None = None, info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``: a delta, a finish reason, or (with ``usage`` and no
    delta) the final usage chunk, whose ``choices`` is empty as OpenAI sends it."""
    body: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
    if usage is not None and delta is None and finish is None:
        body["choices"] = []
        body["usage"] = dict(usage)
    else:
        body["choices"] = [{"index": 0, "delta": dict(delta or {}), "logprobs": None, "finish_reason": finish}]
    if info is not None:
        body["effreason"] = dict(info)
    return body


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,  # noqa: A002
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


