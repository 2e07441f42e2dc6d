"""The fast tier's module check counts a module as touched only when one of its functions ran."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from extract.store import window_order
from tests import tiers


def ran_codes(call) -> set:
    """The code objects whose frames started during call(), as the tier's trace hook sees them."""
    seen: set = set()

    def trace(frame, event, arg):
        seen.add(frame.f_code)

    before = sys.gettrace()
    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(before)
    return seen


def test_a_module_is_touched_by_a_function_that_ran_not_by_its_import():
    path = "extract/store/window_order.py"
    assert path in tiers.untouched_modules(set(), imported={tiers.ROOT / path})
    rng = np.random.default_rng(0)
    ran = ran_codes(lambda: window_order.shuffled_windows(10, 4, np.ones(10, bool), 4, rng))
    assert path not in tiers.untouched_modules(ran, imported=set())


def test_a_module_without_functions_is_touched_by_its_import():
    bare = [p for p, has_functions in tiers.package_modules().items() if not has_functions]
    assert bare, "every package module defines a function: this rule has nothing to check"
    name = str(bare[0].relative_to(tiers.ROOT))
    assert name in tiers.untouched_modules(set(), imported=set())
    assert name not in tiers.untouched_modules(set(), imported={bare[0]})


@pytest.mark.parametrize(
    "markexpr, keyword, args, expected",
    [
        ("not slow", "", ["tests"], True),
        ("not slow", "", ["."], True),
        ("not slow", "", ["tests/probe"], False),
        ("not slow", "cka", ["tests"], False),
        ("", "", ["tests"], False),
    ],
)
def test_the_module_check_runs_only_on_a_whole_fast_run(markexpr, keyword, args, expected):
    option = SimpleNamespace(markexpr=markexpr, keyword=keyword, deselect=None, lf=False)
    config = SimpleNamespace(option=option, args=args, invocation_params=SimpleNamespace(dir=tiers.ROOT))
    assert tiers._is_whole_fast_run(config) is expected
