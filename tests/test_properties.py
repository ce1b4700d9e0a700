"""Property-based (hypothesis): the public transforms and prune, given random well-typed and ill-typed
arguments (NaN, inf, huge, negative, numpy scalars, tensors, wrong types), either return a model or raise
ValueError/TypeError with a readable one-line message, and never change their input (issue 29)."""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import compress
from compress.models import ResNet, ResNetConfig

ODD = st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, 10**12, -(10**12), 1e300, "2", None, True, [], {},
                       np.float32(0.5), np.int64(2), torch.tensor(0.5), torch.tensor([1, 2]), object()])
NUMBER = st.one_of(st.integers(-5, 40), st.floats(-2, 3, allow_nan=False), ODD)


def _tiny() -> ResNet:
    torch.manual_seed(0)
    return ResNet(ResNetConfig.uniform((8, 16, 16), (1, 1, 1), (1, 2, 2)))


MODEL = _tiny()
STATE = {k: v.clone() for k, v in MODEL.state_dict().items()}
CONFIG = MODEL.config

CALLS = st.one_of(
    st.tuples(st.just("scale_width"), st.fixed_dictionaries({"factor": st.one_of(NUMBER, st.lists(NUMBER, max_size=4))})),
    st.tuples(st.just("remove_stage"), st.fixed_dictionaries({"index": NUMBER})),
    st.tuples(st.just("insert_stage"), st.fixed_dictionaries({"index": NUMBER, "width": NUMBER, "blocks": NUMBER})),
    st.tuples(st.just("redistribute_blocks"), st.fixed_dictionaries({"blocks": st.one_of(st.lists(NUMBER, max_size=4), NUMBER)})),
    st.tuples(st.just("set_kernels"), st.fixed_dictionaries({"kernels": st.one_of(
        st.tuples(NUMBER, NUMBER), st.lists(st.tuples(NUMBER, NUMBER), max_size=4), NUMBER)})),
    st.tuples(st.just("add_se"), st.fixed_dictionaries({"where": st.sampled_from(["stem", "blocks", "head", 3, None]),
                                                       "reduction": NUMBER})),
    st.tuples(st.just("prune"), st.one_of(
        st.fixed_dictionaries({"ratios": st.one_of(NUMBER, st.dictionaries(st.sampled_from(["layer1", "layer2.*", 0, "x"]),
                                                                            NUMBER, max_size=2))}),
        st.fixed_dictionaries({"target_params": NUMBER}),
        st.fixed_dictionaries({"target_flops": NUMBER}),
    )),
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(CALLS)
def test_transforms_return_a_model_or_refuse_in_one_line_and_never_change_their_input(call):
    name, kwargs = call
    fn = getattr(compress, name)
    try:
        out = fn(MODEL, **kwargs)
    except (ValueError, TypeError) as e:
        message = str(e)
        assert message and "\n" not in message and len(message) < 600, (name, kwargs, message)
    else:
        assert isinstance(out, torch.nn.Module) and out is not MODEL
        assert compress.count_params(out) > 0
    assert MODEL.config == CONFIG
    now = MODEL.state_dict()
    assert now.keys() == STATE.keys() and all(torch.equal(now[k], STATE[k]) for k in STATE), (name, kwargs)
