"""Fixtures of the rule-library oracle tests: seeded random torchvision models (float64) and inputs."""

import pytest
import torch

from tests.helpers import rule_oracles as O

torch.set_num_threads(1)  # the test machines are shared: one thread per pytest worker


@pytest.fixture(scope="session")
def vgg():
    model = O.vgg16(seed=0)
    x = O.images(2, 32, seed=0)
    return model, x, O.labels(model, x)


@pytest.fixture(scope="session")
def resnet():
    model = O.resnet50(seed=0)
    x = O.images(2, 32, seed=1)
    return model, x, O.labels(model, x)


@pytest.fixture
def models(request, vgg, resnet):
    return {"vgg": vgg, "resnet": resnet}
