"""PatternNet and PatternAttribution against the reference estimator (iNNvestigate 1.0.8's ReLUPositivePattern)
on a small dense net: the patterns are fitted with `rulelang.fit(explainer, batches)` in one pass over the data,
then the explainer runs as usual."""

import pytest

from tests.helpers import rule_oracles as O
from tests.helpers import rule_reference as ref
from tests.helpers import toy_nets


@pytest.mark.parametrize("rule, attribution", [("pattern-net", False), ("pattern-attribution", True)])
def test_pattern_method_matches_reference(rule, attribution):
    import rulelang

    net = toy_nets.mlp(seed=6, sizes=(10, 16, 12, 6))
    data = toy_nets.inputs(256, shape=(10,), seed=6)
    x = toy_nets.inputs(3, shape=(10,), seed=7)
    t = O.labels(net, x)
    explainer = rulelang.compile(net, rule, example_input=x)
    rulelang.fit(explainer, [data[:100], data[100:]], progress=False)  # two batches, one pass
    patterns = ref.fit_patterns(net, data)
    O.assert_close(explainer(x, target=t), ref.pattern_method(net, x, t, patterns, attribution), what=rule)
