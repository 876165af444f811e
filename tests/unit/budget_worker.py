"""Runs reasoning-graph requests in a process of its own, for the multi-process budget tests.

::

    python tests/unit/budget_worker.py CONFIG.json --first 0 --count 25 --thread t --user ann

``CONFIG.json`` holds configuration data (:func:`budget_helpers.config_data`). The worker
builds one reasoning graph, asks questions ``first … first+count-1``
(:func:`budget_helpers.question`) from ``--workers`` threads at once, and prints each
request's ``result`` as one JSON line on stdout. Every process opens the same ledger file,
so their holds meet only in SQLite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from budget_helpers import question, run_all

from effreason_agents.config import Config
from effreason_agents.graph import ReasoningContext, build_reasoning_graph

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, help="a JSON file of configuration data")
    p.add_argument("--first", type=int, default=0, help="index of the first question")
    p.add_argument("--count", type=int, default=1, help="how many requests")
    p.add_argument("--thread", default=None, help="the budget thread of every request")
    p.add_argument("--user", default=None, help="the budget user of every request")
    p.add_argument("--workers", type=int, default=5, help="requests in flight at once")
    args = p.parse_args(argv)
    config = Config.model_validate(json.loads(args.config.read_text(encoding="utf-8")))
    graph = build_reasoning_graph(config)

    def ask(i: int) -> dict[str, Any]:
        ctx = ReasoningContext(thread_id=args.thread, user_id=args.user)
        return graph.invoke({"question": question(args.first + i)}, context=ctx)["result"]

    try:
        for result in run_all(ask, args.count, workers=args.workers):
            sys.stdout.write(json.dumps(result, default=str) + "\n")
            sys.stdout.flush()
    finally:
        graph.services.close()


if __name__ == "__main__":
    main()
