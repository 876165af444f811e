"""Message converters shared by every front end (pure: LangChain message types only).

The chat model, the agent middleware and the chatbot graph all read messages
the same way: the text of a message, the last human question, earlier answered
turns as context, and the checks that refuse input no tier can answer before
any model is called.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from effreason_agents.core.text import validate_question, visible_text
from effreason_agents.errors import InvalidQuestionError

__all__ = [
    "HISTORY_MAX_CHARS",
    "HISTORY_TURNS",
    "TEXT_BLOCK_TYPES",
    "block_text",
    "check_tool_messages",
    "last_human_text",
    "message_text",
    "messages_to_question",
    "question_with_history",
]

TEXT_BLOCK_TYPES = {"text"}
HISTORY_TURNS = 2
"""Earlier answered turns prepended to the question, when they are short."""
HISTORY_MAX_CHARS = 400
"""The earlier turns are included only if their text is at most this long."""


def message_text(message: AnyMessage) -> str:
    """The text of a message: its string content, or its text blocks joined."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = [p if isinstance(p, str) else p.get("text", "") for p in content if isinstance(p, (str, dict))]
    return "".join(parts)


def question_with_history(messages: list[AnyMessage], question: str) -> str:
    """The question, with up to :data:`HISTORY_TURNS` earlier answered turns before it
    when they are short (at most :data:`HISTORY_MAX_CHARS` characters)."""
    pairs: list[tuple[str, str]] = []
    for i in range(len(messages) - 1):
        h, a = messages[i], messages[i + 1]
        if isinstance(h, HumanMessage) and isinstance(a, AIMessage):
            if a.response_metadata.get("answered"):
                pairs.append((message_text(h).strip(), message_text(a).strip()))
    pairs = pairs[-HISTORY_TURNS:]
    if not pairs or sum(len(q) + len(a) for q, a in pairs) > HISTORY_MAX_CHARS:
        return question
    lines = ["Earlier in this conversation:"]
    for q, a in pairs:
        lines += [f"Q: {q}", f"A: {a}"]
    return "\n".join(lines) + f"\n\nNow answer this question: {question}"


def last_human_text(messages: Sequence[BaseMessage]) -> str:
    """The text of the last human message (``""`` when there is none)."""
    for m in reversed(messages):
        if isinstance(m, HumanMessage):
            return message_text(m).strip()
    return ""


def block_text(content: Any, where: str, strict: bool = True) -> str:
    """The text of a message's content; :class:`ValueError` for non-text content blocks
    (``strict=False``, for earlier AI replies: reasoning and tool-call blocks are skipped)."""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, Mapping):
            kind = block.get("type")
            if kind not in TEXT_BLOCK_TYPES:
                if not strict:
                    continue
                raise ValueError(
                    f"{where} has a {kind!r} content block; ChatCostAware accepts text only "
                    "(send images, audio and files to a multimodal chat model)"
                )
            parts.append(str(block.get("text", "")))
        else:
            raise ValueError(f"{where} has unsupported content of type {type(block).__name__}; send text")
    return "".join(parts)


def check_tool_messages(messages: Sequence[BaseMessage]) -> None:
    """:class:`ValueError` for a :class:`ToolMessage` whose call no earlier :class:`AIMessage` made
    (what an OpenAI-compatible server would refuse, caught before any model call)."""
    seen: set[str] = set()
    for i, m in enumerate(messages):
        if isinstance(m, AIMessage):
            seen.update(str(tc.get("id")) for tc in m.tool_calls or [] if tc.get("id"))
        elif isinstance(m, ToolMessage) and str(m.tool_call_id) not in seen:
            raise ValueError(
                f"messages[{i}] is a ToolMessage for tool_call_id {m.tool_call_id!r}, which no earlier "
                "AIMessage's tool_calls contains; send the AIMessage that made the call before its result"
            )


def messages_to_question(messages: Sequence[BaseMessage]) -> str:
    """The question the reasoning graph answers for a chat: the last human message, with
    earlier answered turns (:func:`~effreason_agents.graph.chat.question_with_history`), system
    messages as instructions before it, and tool results that follow it after it.

    Raises :class:`ValueError` (an :class:`InvalidQuestionError` where it is about the
    question) for input no tier can answer, before any model is called."""
    if not messages:
        raise InvalidQuestionError("no messages: send at least one human message")
    texts = [
        block_text(m.content, f"messages[{i}] ({m.type})", strict=not isinstance(m, AIMessage))
        for i, m in enumerate(messages)
    ]
    check_tool_messages(messages)
    last = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=None)
    if last is None:
        raise InvalidQuestionError("no human message to answer: add a HumanMessage (role 'user') with the question")
    if not visible_text(texts[last]):
        raise InvalidQuestionError("the last human message is empty: ask a question")
    question = validate_question(texts[last])
    history = [m for m in messages[:last] if not isinstance(m, SystemMessage)]
    text = question_with_history(history, question)
    system = "\n".join(texts[i].strip() for i, m in enumerate(messages) if isinstance(m, SystemMessage) and texts[i].strip())
    if system:
        text = f"Instructions: {system}\n\n{text}"
    after = [
        f"Tool result ({getattr(m, 'name', None) or 'tool'}): {texts[last + 1 + j].strip()}"
        for j, m in enumerate(messages[last + 1 :])
        if isinstance(m, ToolMessage) and texts[last + 1 + j].strip()
    ]
    if after:
        text += "\n\n" + "\n".join(after)
    return text


