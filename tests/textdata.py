"""Generated review texts with known truth, shared by unit and integration tests."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

NOW = datetime(2026, 11, 28, tzinfo=UTC)
POSITIVE = ["很好", "满意", "喜欢", "推荐", "超值", "好用", "漂亮", "舒服"]
NEGATIVE = ["很差", "失望", "退货", "糟糕", "劣质", "难用", "坏了", "后悔"]
THINGS = ["手机", "耳机", "衣服", "鞋子", "台灯", "水杯", "书包", "键盘", "屏幕", "包装", "物流"]


def labelled(n: int = 400, seed: int = 3, now: datetime = NOW) -> pd.DataFrame:
    """Reviews whose words say their label (a classifier can learn it), all distinct."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = rng.choice(POSITIVE if label == "pos" else NEGATIVE, 2, replace=False)
        things = rng.choice(THINGS, 2, replace=False)
        rows.append({"id": f"r{i}", "text": f"{things[0]}{words[0]},{things[1]}{words[1]}。"
                     f"编号{i}", "label": label, "collected_at": now.isoformat()})
    return pd.DataFrame(rows)


