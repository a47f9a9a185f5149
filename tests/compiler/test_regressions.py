"""Regressions found by the analysis and `rulelang test` helpers' property runs."""

import torch
import torch.nn.functional as F
from torch import nn

import rulelang


class _FunctionalDense(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l0 = nn.Linear(16, 3)

    def forward(self, x):
        return F.linear(torch.flatten(x, 1), self.l0.weight, self.l0.bias)


def test_fitting_a_functional_layer_reads_its_weight():
    """`F.linear(x, self.l0.weight, ...)`: the weight is a get_attr node, not a module parameter path."""
    torch.manual_seed(0)
    model, x = _FunctionalDense(), torch.randn(8, 1, 4, 4)
    ex = rulelang.compile(model, "pattern-net", example_input=x, check=False)
    rulelang.fit(ex, [x], progress=False)
    a = ex(x, target=0)
    assert a.shape == x.shape and torch.isfinite(a).all() and a.abs().sum() > 0


def test_reveal_cancel_after_pooling_and_routing_ops():
    """A ReLU after a max-pool, an average pool or a reshape needs the producer's dp/dn split."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.AvgPool2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 3),
    ).double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    ex = rulelang.compile(model, "deeplift-reveal-cancel", example_input=x)
    a = ex(x, target=1)
    assert a.shape == x.shape and torch.isfinite(a).all()


class _IndexAfterPermute(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(4, 12)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.qkv(x).unflatten(-1, (3, 4)).permute(2, 0, 1, 3)
        q, k, v = t[0], t[1], t[2]
        return self.out(q * 0.5 + k + v).mean(1)


def test_indexing_a_tensor_is_not_a_tuple_pick():
    """`t[0]` on a tensor is an indexing op of its own: the permute before it runs once, not once per index (a
    tensor's TensorMetadata is a NamedTuple and once read as a tuple of tensors)."""
    torch.manual_seed(0)
    model, x = _IndexAfterPermute().double(), torch.randn(2, 5, 4, dtype=torch.float64)
    ex = rulelang.compile(model, "gradient", example_input=x)
    permutes = [op for op in ex.graph.ops if "permute" in str(op.target)]
    indexes = [op for op in ex.graph.ops if "getitem" in str(op.target)]
    assert len(permutes) == 1 and len(indexes) == 3, [(op.name, op.target) for op in ex.graph.ops]
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xg)[:, 1].sum(), xg)
    torch.testing.assert_close(ex(x, target=1), g)
    assert torch.isfinite(rulelang.compile(model, "attn-lrp", example_input=x)(x, target=1)).all()
