"""Fuzzing the decoder and the segmenter with mutated real image bytes (issue 24): every
case ends in a field (which segments) or a ``FieldError``, within a time bound. The seeds,
mutations and the check live in ``benchmarks/fuzz_decode.py``, which runs many more cases
in worker processes; here hypothesis draws about 3000 cases, deterministically."""

from __future__ import annotations

import faulthandler
import importlib.util
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_SPEC = importlib.util.spec_from_file_location(
    "fuzz_decode", Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_decode.py"
)
fuzz = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fuzz)

#: Seed files per test: each group gets its own budget of examples.
GROUPS = {
    "jpeg": ["jpeg", "jpeg-progressive", "jpeg-restart", "jpeg-444"],
    "png": ["png"],
    "tiff": ["tiff", "tiff-lzw", "tiff-deflate"],
    "bmp-ppm": ["bmp", "ppm"],
    "webp": ["webp", "webp-lossless"],
}
EXAMPLES = {"jpeg": 900, "png": 500, "tiff": 700, "bmp-ppm": 400, "webp": 400}
#: A case slower than this is a hang, not a slow decode (seed fields are 80 x 60 pixels).
CASE_DEADLINE = timedelta(seconds=5)

positions = st.one_of(st.integers(0, 63), st.integers(0, 1 << 20))
extremes = st.one_of(st.sampled_from(fuzz.EXTREMES), st.integers(0, (1 << 32) - 1))
mutation = st.one_of(
    st.tuples(st.sampled_from(["flip", "set"]), positions, st.integers(0, 255)),
    st.tuples(
        st.just("int"),
        positions,
        st.tuples(extremes, st.sampled_from([1, 2, 4]), st.booleans()),
    ),
    st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=64)),
    st.tuples(
        st.sampled_from(["delete", "duplicate", "truncate", "splice"]),
        positions,
        st.integers(1, 255),
    ),
)


@pytest.fixture(scope="module", autouse=True)
def watchdog():
    """A decoder stuck in C never returns to Python: end the run with a traceback instead."""
    faulthandler.dump_traceback_later(600, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def test_seeds_decode_and_segment():
    for name, data in fuzz.seed_files().items():
        assert fuzz.check(data) == "field", name


@pytest.mark.parametrize("group", list(GROUPS))
def test_mutated_images_end_in_a_field_or_a_field_error(group):
    @settings(
        max_examples=EXAMPLES[group],
        deadline=CASE_DEADLINE,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        name=st.sampled_from(GROUPS[group]),
        ops=st.lists(mutation, min_size=1, max_size=6),
        mode=st.sampled_from(["robust", "fast"]),
    )
    def run(name, ops, mode):
        data = fuzz.mutate(fuzz.seed_files()[name], ops)
        assert fuzz.check(data, mode) in ("field", "refused", "incomplete")

    run()
