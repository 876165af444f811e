"""Services: what every front end shares for one configuration.

One :class:`Services` holds the configuration, one client per tier, the budget
ledger, the outcome store, the calibrators, the router and the cascade scorer, each
opened on first use. Graph nodes, :class:`~effreason_agents.langchain.chat_model.ChatCostAware`
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
    _scorer: Any = None
    _scorer_loaded: bool = False
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
                    if self.config.escalation.next == "value":  # value mode may also start at its extra arms
                        arms += [a.name for a in self.config.escalation.value_arms if a.name not in arms]
                    try:
                        self._router = Router.load(path, arms=arms)
                        if self.config.router.target_share is not None:  # the threshold follows recent traffic
                            from effreason_agents.adapters.router_target import targeted

                            self._router = targeted(self._router, self.config)
                    except RouterError as exc:

                        logger.warning("router not used: %s", exc)
                        warnings.warn(f"router not used: {exc}", stacklevel=3)
            return self._router

    @property
    def scorer(self) -> Any:
        """The configured cascade scorer (:class:`~effreason_agents.adapters.scorer.CascadeScorer`,
        ``escalation.scorer``), or ``None``. An artifact that cannot be used (missing,
        corrupted, another version) is refused with a warning, and attempts keep the
        calibrated confidence instead of failing; so is one that judges none of the
        ladder's arms (by arm, tier or model name)."""
        with self._lock:
            if not self._scorer_loaded:
                self._scorer_loaded = True
                path = self.config.escalation.scorer
                if path:
                    from effreason_agents.adapters.scorer import CalibratorError, CascadeScorer

                    try:
                        scorer = CascadeScorer.load(path)
                    except CalibratorError as exc:
                        logger.warning("cascade scorer not used: %s", exc)
                        warnings.warn(f"cascade scorer not used: {exc}", stacklevel=3)
                    else:
                        ladder = [(a.name, a.tier, self.config.tiers[a.tier].model) for a in self.config.ladder
                                  if a.tier in self.config.tiers]
                        if any(scorer.applies(*arm) for arm in ladder):
                            self._scorer = scorer
                        else:
                            msg = (f"cascade scorer {path!r} judges {', '.join(scorer.applies_to)}, none of the "
                                   f"ladder's arms ({', '.join(a for a, _, _ in ladder)}); refit it on those arms' "
                                   "outcomes or pass --applies-to to `effreason router cascade`")
                            logger.warning("cascade scorer not used: %s", msg)
                            warnings.warn(f"cascade scorer not used: {msg}", stacklevel=3)
            return self._scorer

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
