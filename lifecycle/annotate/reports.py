"""The annotate stage's name, and its reports and exports written to the work bucket."""

from __future__ import annotations

import json
from typing import Any

from lifecycle.context import StageContext
from storage import keys

STAGE = "annotate"


def _write_json(ctx: StageContext, name: str, body: Any) -> str:
    return _write_text(ctx, name, json.dumps(body, ensure_ascii=False, indent=2, default=str),
                       "application/json")


def _write_text(ctx: StageContext, name: str, text: str,
                kind: str = "application/xml") -> str:
    key = keys.report_key(ctx.dataset, ctx.run_id, STAGE, name)
    ctx.store.write_atomic(ctx.work_bucket, key, text.encode("utf-8"), kind)
    return f"s3://{ctx.work_bucket}/{key}"
