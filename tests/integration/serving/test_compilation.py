"""A registered version is compiled to ONNX, checked against sklearn, and tagged with the verdict."""

from __future__ import annotations

import pytest

from esteira import tracking
from esteira.serving.compilation import compile_version
from esteira.serving.compiled import CompiledRecord
from esteira.serving.model_loader import load_version
from tests.integration.serving import models
from tests.integration.serving.conftest import fresh_usecase

pytestmark = pytest.mark.integration


def test_a_forest_compiles_equivalent_and_loads_with_its_graph(settings):
    uc = fresh_usecase()
    version = models.register(uc, models.train_family(uc, "random_forest", seed=3))

    record = compile_version(uc, settings, version, models.frame(uc, 400, seed=4))

    assert record.equivalent, record.reason
    assert record.rows_checked == 400
    tags = tracking.client(settings).get_model_version(uc.model_name, version).tags
    assert CompiledRecord.from_tags(tags) == record
    loaded = load_version(settings, uc.model_name, version)
    assert loaded.compiled is not None
    assert loaded.describe()["compiled"] == "onnx"

