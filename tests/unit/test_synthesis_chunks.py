"""Synthesis's generation in chunks (lifecycle/synthesize/chunks.py): the chunks conserve the
candidates asked per label and none exceeds the size; when everything fits in one chunk it
is the spec's one stream, as the stage drew before it had chunks; above, a chunk's stream
depends on (seed, label, chunk) alone."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.synthesize import chunks

pytestmark = pytest.mark.unit

ASKED = st.dictionaries(st.sampled_from(["pos", "neg", "中性", "x"]), st.integers(1, 400),
                        max_size=4)


@settings(max_examples=60, deadline=None)
@given(asked=ASKED, size=st.integers(1, 500))
def test_the_chunks_conserve_the_candidates_asked_per_label(asked: dict[str, int],
                                                            size: int) -> None:
    units = chunks.plan(asked, size)
    assert [u["index"] for u in units] == list(range(len(units)))
    if sum(asked.values()) <= size:  # one unit, every label, the spec's stream
        assert [(u["asked"], u["chunk"]) for u in units] == [(asked, chunks.ONE_STREAM)]
        return
    total: dict[str, int] = {}
    for u in units:
        [(lab, n)] = u["asked"].items()
        assert 0 < n <= size and u["chunk"] == total.get(lab, 0) // size
        total[lab] = total.get(lab, 0) + n
    assert total == asked
    # listed label after label, in the order asked
    assert list(dict.fromkeys(next(iter(u["asked"])) for u in units)) == list(asked)


def test_one_chunk_draws_from_the_seeds_stream_and_chunks_from_their_own() -> None:
    [one] = chunks.plan({"a": 3, "b": 4}, 7)
    assert chunks.rng(one, 5).random(4).tolist() == \
        np.random.default_rng(5).random(4).tolist()
    # above the size, chunk 1 of "b" draws the same whatever else was asked
    small = chunks.plan({"b": 9}, 4)
    large = chunks.plan({"a": 100, "b": 9}, 4)
    b1 = [u for u in large if u["asked"] == {"b": 4} and u["chunk"] == 1]
    assert len(small) == 3 and len(b1) == 1
    assert chunks.rng(small[1], 5).random(4).tolist() == chunks.rng(b1[0], 5).random(4).tolist()
    streams = {tuple(chunks.rng(u, 5).random(2).tolist()) for u in large}
    assert len(streams) == len(large)  # every chunk its own stream
    assert chunks.rng(small[1], 6).random(2).tolist() != \
        chunks.rng(small[1], 5).random(2).tolist()


def test_the_llm_and_a_passthrough_are_one_chunk() -> None:
    [llm] = chunks.plan({"a": 900}, 10, one_stream=True)
    assert llm["asked"] == {"a": 900} and llm["chunk"] == chunks.ONE_STREAM
    [passing] = chunks.plan({}, 10, passthrough="disabled")
    assert passing["passthrough"] == "disabled" and "disabled" in passing["label"]


@settings(max_examples=60, deadline=None)
@given(asked=ASKED, size=st.integers(1, 500), share=st.floats(0, 1))
def test_the_quotas_add_up_to_the_plan_and_the_offsets_to_the_quotas_before(
        asked: dict[str, int], size: int, share: float) -> None:
    """Each label's records wanted (at most its candidates asked) cut among its chunks: the
    quotas add up to them, none exceeds its chunk's candidates, and each chunk's offset is
    the quotas before it (so the positions of the accepted records never collide)."""
    wanted = {lab: int(n * share) for lab, n in asked.items()}
    units = chunks.with_quotas(chunks.plan(asked, size), wanted)
    total: dict[str, int] = {}
    offset = 0
    for u in units:
        assert u["offset"] == offset and list(u["quota"]) == list(u["asked"])
        for lab, q in u["quota"].items():
            assert 0 <= q <= u["asked"][lab]
            total[lab] = total.get(lab, 0) + q
        offset += sum(u["quota"].values())
    assert total == {lab: n for lab, n in wanted.items() if lab in total} == wanted
    if len(units) == 1:  # one chunk: the whole plan, as the single decision had it
        assert units[0]["quota"] == wanted and units[0]["offset"] == 0
