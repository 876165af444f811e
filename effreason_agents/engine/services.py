"""Services: what every front end shares for one configuration.

One :class:`Services` holds the configuration, one client per tier, the budget
ledger, the outcome store, the calibrators and the router, each opened on first
use. Graph nodes, :class:`~effreason_agents.langchain.chat_model.ChatCostAware`
and :class:`~effreason_agents.langchain.middleware.CostAwareMiddleware` take one
and share it; it is safe to share across threads.
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

from effreason_agents.adapters.calibrator import CalibratorSet, load_calibrators
from effreason_agents.adapters.ledger import BudgetLedger
from effreason_agents.adapters.store import OutcomeStore
from effreason_agents.adapters.tiers import TierClient, clients_for
from effreason_agents.config import Config

__all__ = ["Services"]

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """What the front ends share. Build one per configuration; it is safe to share across threads."""

    config: Config
    environ: Mapping[str, str] | None = None
    clients: dict[str, TierClient] = field(default_factory=dict)
    _store: OutcomeStore | None = None
    _ledger: BudgetLedger | None = None
    _calibrators: CalibratorSet | None = None
    _router: Any = None
    _router_loaded: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not self.clients:
            self.clients = clients_for(self.config, self.environ)

    @property
    def store(self) -> OutcomeStore:
        with self._lock:
            if self._store is None:
                self._store = OutcomeStore(self.config.store.target())
            return self._store

    @property
    def ledger(self) -> BudgetLedger:
        with self._lock:
            if self._ledger is None:
                self._ledger = BudgetLedger(self.config.ledger_target())
            return self._ledger

    @property
    def calibrators(self) -> CalibratorSet:
        """The configured calibrators that fit this configuration (loaded once; unusable
        artifacts are skipped with a warning and their arms use the heuristic)."""
        with self._lock:
            if self._calibrators is None:

                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    self._calibrators = load_calibrators(self.config, self.environ)
                for w in caught:
                    logger.warning("%s", w.message)
                    warnings.warn(w.message, stacklevel=3)
            return self._calibrators

    @property
    def router(self) -> Any:
        """The configured router artifact (:class:`~effreason_agents.adapters.router.Router`), or ``None``
        for the heuristic classifier. An artifact that cannot be used (missing, corrupted, another
        version, trained on other arms than the ladder's) is refused with a warning, and requests
        start from the heuristic instead of failing."""
        with self._lock:
            if not self._router_loaded:
                self._router_loaded = True
                path = self.config.router.artifact
                if path:
                    from effreason_agents.adapters.router import Router, RouterError


                    arms = [a.name for a in self.config.ladder]
                    try:
                        self._router = Router.load(path, arms=arms)
                    except RouterError as exc:

                        logger.warning("router not used: %s", exc)
                        warnings.warn(f"router not used: {exc}", stacklevel=3)
            return self._router

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None



    @property
    def config_version(self) -> str:
        """The configuration's version hash (computed once)."""
        v = self.__dict__.get("_config_version")
        if v is None:
            v = self.__dict__["_config_version"] = self.config.version()
        return v

    def client(self, tier: str) -> TierClient:
        return self.clients[tier]
