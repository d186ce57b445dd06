import json
import pathlib

import numpy as np
import pytest

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def load_sklearn12_cases():
    """scikit-learn 1.2.2 lbfgs fits recorded by
    tests/fixtures/make_sklearn12_fixtures.py."""
    with open(FIXTURES / "sklearn12_lbfgs.json") as fh:
        return json.load(fh)["cases"]


@pytest.fixture(scope="session")
def sklearn12_cases():
    return load_sklearn12_cases()


def fixture_problem(case):
    """(X, y, sample_weight, params) of a recorded case, as passed to fit."""
    X = np.array(case["X"], dtype=np.float64)
    if case["sparse"]:
        sparse = pytest.importorskip("scipy.sparse")
        X = sparse.csr_matrix(X)
    params = dict(case["params"])
    if isinstance(params.get("class_weight"), list):
        params["class_weight"] = {k: v for k, v in params["class_weight"]}
    return X, case["y"], case["sample_weight"], params
