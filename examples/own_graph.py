"""The cost-aware reasoning nodes inside your own LangGraph graph.

    python examples/own_graph.py ["What is 12 + 30?"]

Your graph keeps its own nodes (here: ``prepare`` tidies the question, ``report``
formats the reply) and adds the reasoning graph as one node with
``add_cost_aware_reasoning``. A SQLite checkpointer keeps each thread's state, and
``stream_mode="custom"`` (with ``subgraphs=True``) shows the progress events: the arm chosen, each attempt's
confidence and cost so far, escalations. Runs offline on the embedded model.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from effreason_agents.graph import add_cost_aware_reasoning


class State(TypedDict, total=False):
    question: str
    answer: str | None
    reasoning: dict[str, Any]
    reply: str


def prepare(state: State) -> dict[str, Any]:
    q = " ".join(state["question"].split())
    return {"question": q if q.endswith("?") else q + "?"}


def report(state: State) -> dict[str, Any]:
    r = state["reasoning"]
    return {"reply": f"{state['answer']} (status {r['status']}, arms {' -> '.join(r['arms_tried'])}, "
                     f"${r['total_cost_usd']}, {r['total_output_tokens']} output tokens)"}


def build(checkpointer: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node("prepare", prepare)
    reason = add_cost_aware_reasoning(builder, name="reason", question_key="question", answer_key="answer",
                                      result_key="reasoning", context={"log": False})
    builder.add_node("report", report)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", reason)
    builder.add_edge(reason, "report")
    builder.add_edge("report", END)
    return builder.compile(checkpointer=checkpointer)


def main(argv: list[str]) -> int:
    question = argv[0] if argv else "What is 12 + 30?"
    with tempfile.TemporaryDirectory() as d:
        conn = sqlite3.connect(Path(d) / "checkpoints.sqlite", check_same_thread=False)
        graph = build(SqliteSaver(conn))
        config = {"configurable": {"thread_id": "example-thread"}}
        # subgraphs=True: the reasoning node's own steps and progress events come through too
        for namespace, mode, chunk in graph.stream({"question": question}, config,
                                                    stream_mode=["custom", "updates"], subgraphs=True):
            if mode == "custom":
                print(f"progress: {chunk}")
            elif not namespace:  # your graph's own steps
                print(f"step: {', '.join(chunk)}")
        state = graph.get_state(config)
        print(f"reply: {state.values['reply']}")
        print(f"checkpointed steps: {sum(1 for _ in graph.get_state_history(config))}")
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
