"""Parquet bytes of a stage table: ``plain`` columns stored as they are, the rest as before."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lifecycle.records import shards

pytestmark = pytest.mark.unit


def _keys(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sig = rng.integers(0, 2**32, size=(n, 17), dtype=np.uint32)
    return pd.DataFrame({"id": [f"r{i}" for i in range(n)], "unit": 3,
                         "length": rng.integers(0, 200, n),
                         "preview": [f"评论 {i % 7}" for i in range(n)],
                         "sig": [row.tobytes() for row in sig]})


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**16), compact=st.booleans())
def test_plain_columns_round_trip_and_the_rest_is_written_as_before(
        n: int, seed: int, compact: bool) -> None:
    df = _keys(n, seed)
    # without plain columns: the bytes of the call table_bytes always made (the oracle)
    table = pa.Table.from_pandas(df, preserve_index=False)
    old = io.BytesIO()
    pq.write_table(table, old, compression="zstd",
                   use_dictionary=shards.low_cardinality(table) if compact else True)
    assert shards.table_bytes(df, compact) == old.getvalue()
    data = shards.table_bytes(df, compact, plain=("sig", "absent"))
    back = pq.read_table(io.BytesIO(data)).to_pandas()
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    meta = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0)
    columns = {meta.column(i).path_in_schema: meta.column(i) for i in range(meta.num_columns)}
    assert columns["sig"].compression == "UNCOMPRESSED"
    assert not columns["sig"].has_dictionary_page
    assert {c.compression for name, c in columns.items() if name != "sig"} == {"ZSTD"}
