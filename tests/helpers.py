"""Small helpers shared by several test folders."""

from __future__ import annotations

import datetime as dt

from esteira.usecase import UseCase

# The feature-store tests are written against days from this date on.
TEST_START = dt.date(2026, 1, 1)


def shrink(uc: UseCase, **generator) -> UseCase:
    """``uc`` with a smaller generator starting at TEST_START unless told otherwise (the
    models are frozen, so copy with updates)."""
    spec = uc.source.generator.model_copy(update={"start": TEST_START, **generator})
    return uc.model_copy(update={"source": uc.source.model_copy(update={"generator": spec})})
