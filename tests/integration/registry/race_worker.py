"""A promotion in its own process, for the race test (a light module: spawn imports it)."""

from __future__ import annotations

import os


def promote_in_process(uc_json, version, expected, barrier, results):
    from esteira.registry import transitions
    from esteira.usecase import UseCase

    uc = UseCase.model_validate_json(uc_json)
    barrier.wait()
    try:
        transitions.promote(uc, version, expected, f"worker-{os.getpid()}", "race")
        results.put(("won", version))
    except transitions.ChampionMoved as exc:
        results.put(("moved", str(exc)))
