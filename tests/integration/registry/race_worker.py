"""Registry transitions in their own processes, for the race and crash tests (a light
module: spawn imports it)."""

from __future__ import annotations

import os


def _churn(model_name: str):
    """Churn with that registered model name (rebuilt here: a process gets names, not models)."""
    from esteira.usecase import RegistrySpec
    from tests.unit.training.synthetic import churn_usecase

    return churn_usecase().model_copy(update={"registry": RegistrySpec(model_name=model_name)})


def promote_in_process(model_name, version, expected, barrier, results):
    from esteira.registry import transitions

    uc = _churn(model_name)
    barrier.wait()
    try:
        transitions.promote(uc, version, expected, f"worker-{os.getpid()}", "race")
        results.put(("won", version))
    except transitions.ChampionMoved as exc:
        results.put(("moved", str(exc)))


def transition_in_process(model_name, action, kwargs, started, results):
    """Run ``transitions.<action>(uc, **kwargs)`` on churn with that model name; say when it
    is about to, then how it ended: ``("ok", value)``, or the exception's class and message."""
    from esteira.registry import transitions

    uc = _churn(model_name)
    started.put(os.getpid())
    try:
        results.put(("ok", getattr(transitions, action)(uc, **kwargs)))
    except Exception as exc:  # noqa: BLE001 - the parent asserts on whichever it was
        results.put((type(exc).__name__, str(exc)))
