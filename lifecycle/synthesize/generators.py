"""Generators of synthetic records, each a small class with ``generate(real, plan, rng)``.

``real`` is the dataset's table, ``plan`` how many records to make per label. Every record a
generator makes names its seed records (``seed_ids``) and the generator's parameters, so it
can be traced. What is accepted is decided by the synthesize stage, not here.

- ``TextAugmenter``: label-preserving word edits (synonym replacement, random insertion,
  deletion and swap) on jieba segmentation for Chinese, on words for other scripts. Synonyms
  come from a small dictionary shipped with the project (lifecycle/synthesize/data/synonyms.txt).
- ``GaussianCopula``: per label, each numeric column's empirical distribution joined by the
  correlation of their normal scores; sampled and mapped back through the columns' quantiles
  (numpy/scipy; SDV would do this but is under the Business Source License).
- ``Smote``: SMOTE interpolation for minority labels (imbalanced-learn).
- ``LLMGenerator``: an OpenAI-compatible chat-completions endpoint writes new records from the
  guideline and seed examples (lifecycle/synthesize/llm.py); off unless the spec names a connection.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
SYNONYMS = Path(__file__).with_name("data") / "synonyms.txt"


@dataclass
class Made:
    """Candidates from one generator: the records, and what the generator could not make."""

    records: pd.DataFrame          # label + generated columns + seed_ids + params
    problems: list[str]


@cache
def synonyms() -> dict[str, list[str]]:
    """Word -> its synonyms, from the shipped dictionary (one group per line)."""
    table: dict[str, list[str]] = {}
    for line in SYNONYMS.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        group = line.split()
        for word in group:
            table[word] = [w for w in group if w != word]
    return table


def words(text: str) -> list[str]:
    """jieba's segmentation for Chinese, whitespace words for other scripts."""
    from lifecycle.text.neardup import is_cjk

    if is_cjk(text):
        import jieba

        jieba.setLogLevel(logging.WARNING)
        return [w for w in jieba.lcut(text) if w]
    return text.split()


class TextAugmenter:
    name = "text_augment"

    def __init__(self, text_field: str, label_field: str, operations: list[str],
                 edit_share: float) -> None:
        self.text, self.label = text_field, label_field
        self.operations, self.edit_share = list(operations), edit_share

    def params(self) -> dict[str, Any]:
        return {"operations": self.operations, "edit_share": self.edit_share}

    def variant(self, text: str, rng: np.random.Generator) -> tuple[str, list[str]]:
        tokens = words(text)
        joiner = "" if re.search(r"[\u4e00-\u9fff]", text) else " "
        n = max(1, int(round(self.edit_share * len(tokens))))
        done: list[str] = []
        table = synonyms()
        for _ in range(n):
            op = str(rng.choice(self.operations))
            content = [i for i, w in enumerate(tokens) if w.strip() and not _punct(w)]
            if op == "synonym":
                options = [i for i in content if tokens[i] in table]
                if options:
                    i = int(rng.choice(options))
                    tokens[i] = str(rng.choice(table[tokens[i]]))
                    done.append(op)
            elif op == "insert":
                present = [w for w in (tokens[i] for i in content) if w in table]
                if present:
                    word = str(rng.choice(table[str(rng.choice(present))]))
                    tokens.insert(int(rng.integers(0, len(tokens) + 1)), word)
                    done.append(op)
            elif op == "delete" and len(content) > 2:
                del tokens[int(rng.choice(content))]
                done.append(op)
            elif op == "swap" and len(content) > 1:
                i, j = (int(x) for x in rng.choice(content, 2, replace=False))
                tokens[i], tokens[j] = tokens[j], tokens[i]
                done.append(op)
        return joiner.join(tokens), done

    def generate(self, real: pd.DataFrame, plan: dict[str, int],
                 rng: np.random.Generator) -> Made:
        rows = []
        for label, n in plan.items():
            pool = real.loc[real[self.label].astype("string") == label]
            pool = pool.loc[pool[self.text].map(lambda t: isinstance(t, str) and bool(t))]
            if pool.empty or n <= 0:
                continue
            for _ in range(n):
                seed = pool.iloc[int(rng.integers(0, len(pool)))]
                text, ops = self.variant(str(seed[self.text]), rng)
                rows.append({self.text: text, self.label: label, "seed_ids": [seed["id"]],
                             "generator_params": json.dumps({**self.params(), "edits": ops},
                                                            ensure_ascii=False)})
        problems = [f"no real record labelled {lab!r} to augment"
                    for lab in plan if (real[self.label].astype("string") == lab).sum() == 0]
        return Made(pd.DataFrame(rows), problems)


def _punct(word: str) -> bool:
    return not re.search(r"\w", word)


def _numbers(column: pd.Series, kinds: tuple[type, ...]) -> bool:
    """Whether an object column holds only numbers of ``kinds`` (and missing values): an
    integer field with a gap, which shards.read_table gives as Python ints and None."""
    values = column.dropna()
    return len(values) > 0 and all(type(v) in kinds for v in values.tolist())


def is_numeric(column: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(column):
        return False
    if pd.api.types.is_numeric_dtype(column):
        return True
    return column.dtype == object and _numbers(column, (int, float))


def is_whole(column: pd.Series) -> bool:
    """Whether a column holds integers (an integer dtype, or Python ints in an object
    column): generated values for it are rounded and kept integers."""
    if pd.api.types.is_bool_dtype(column):
        return False
    return pd.api.types.is_integer_dtype(column) or (column.dtype == object
                                                     and _numbers(column, (int,)))


def typed_like(frame: pd.DataFrame, real: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Generated ``columns`` of ``frame`` rounded to integers where the real column holds
    integers, in the real column's type (so an integer field stays one when published)."""
    for c in columns:
        if is_whole(real[c]):
            whole = pd.Series(np.round(frame[c].to_numpy(dtype=float)).astype(np.int64),
                              index=frame.index)
            frame[c] = whole.astype(object) if real[c].dtype == object else \
                whole.astype(real[c].dtype)
    return frame


def numeric_columns(df: pd.DataFrame, exclude: set[str]) -> list[str]:
    return [c for c in df.columns if c not in exclude and is_numeric(df[c])]


class GaussianCopula:
    name = "tabular_copula"

    def __init__(self, label_field: str, columns: list[str]) -> None:
        self.label, self.columns = label_field, columns

    def params(self) -> dict[str, Any]:
        return {"columns": self.columns}

    def generate(self, real: pd.DataFrame, plan: dict[str, int],
                 rng: np.random.Generator) -> Made:
        from scipy import stats

        frames, problems = [], []
        for label, n in plan.items():
            part = real.loc[real[self.label].astype("string") == label, self.columns].dropna()
            if len(part) < 3 or n <= 0:
                if n > 0:
                    problems.append(f"label {label!r} has {len(part)} complete rows; the "
                                    "copula needs at least 3")
                continue
            values = part.to_numpy(dtype=float)
            # normal scores of each column's ranks, and their correlation
            ranks = stats.rankdata(values, axis=0) / (len(values) + 1)
            scores = stats.norm.ppf(ranks)
            corr = np.corrcoef(scores, rowvar=False) if values.shape[1] > 1 else np.ones((1, 1))
            corr = np.nan_to_num(corr, nan=0.0)
            np.fill_diagonal(corr, 1.0)
            corr = _nearest_correlation(corr)
            draws = rng.multivariate_normal(np.zeros(len(self.columns)), corr, size=n)
            u = stats.norm.cdf(draws)
            out = np.column_stack([np.quantile(values[:, j], u[:, j], method="linear")
                                   for j in range(values.shape[1])])
            frame = typed_like(pd.DataFrame(out, columns=self.columns), real, self.columns)
            frame[self.label] = label
            # seeds: the real rows of the label it was fitted on, named by their nearest one
            near = _nearest_ids(part, real.loc[part.index, "id"], frame[self.columns])
            frame["seed_ids"] = [[i] for i in near]
            frame["generator_params"] = json.dumps({**self.params(), "fitted_on": len(part)})
            frames.append(frame)
        return Made(pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
                    problems)


def _nearest_correlation(corr: np.ndarray) -> np.ndarray:
    """Clip negative eigenvalues so sampling works on a rank-deficient correlation."""
    vals, vecs = np.linalg.eigh(corr)
    fixed: np.ndarray = vecs @ np.diag(np.clip(vals, 1e-9, None)) @ vecs.T
    d = np.sqrt(np.diag(fixed))
    out: np.ndarray = fixed / np.outer(d, d)
    return out


def _nearest_ids(real: pd.DataFrame, ids: pd.Series, made: pd.DataFrame) -> list[str]:
    from sklearn.neighbors import NearestNeighbors

    scale = real.std(ddof=0).replace(0, 1).to_numpy()
    nn = NearestNeighbors(n_neighbors=1).fit(real.to_numpy(dtype=float) / scale)
    _, idx = nn.kneighbors(made.to_numpy(dtype=float) / scale)
    listed = ids.tolist()
    return [str(listed[int(i)]) for i in idx[:, 0]]


class Smote:
    name = "smote"

    def __init__(self, label_field: str, columns: list[str], k_neighbors: int = 5) -> None:
        self.label, self.columns, self.k = label_field, columns, k_neighbors

    def params(self) -> dict[str, Any]:
        return {"columns": self.columns, "k_neighbors": self.k}

    def generate(self, real: pd.DataFrame, plan: dict[str, int],
                 rng: np.random.Generator) -> Made:
        from imblearn.over_sampling import SMOTE
        from sklearn.neighbors import NearestNeighbors

        usable = real.dropna(subset=self.columns)
        y = usable[self.label].astype("string")
        counts = y.value_counts()
        wanted = {lab: int(counts.get(lab, 0)) + n for lab, n in plan.items() if n > 0}
        small = [lab for lab in wanted if counts.get(lab, 0) <= self.k]
        problems = [f"label {lab!r} has {counts.get(lab, 0)} rows; SMOTE needs more than "
                    f"k_neighbors={self.k}" for lab in small]
        wanted = {lab: n for lab, n in wanted.items() if lab not in small}
        if not wanted:
            return Made(pd.DataFrame(), problems)
        sampler = SMOTE(sampling_strategy=wanted, k_neighbors=self.k,
                        random_state=int(rng.integers(0, 2**31 - 1)))
        x = usable[self.columns].to_numpy(dtype=float)
        xs, ys = sampler.fit_resample(x, y.to_numpy())
        new_x, new_y = xs[len(x):], ys[len(x):]
        frame = typed_like(pd.DataFrame(new_x, columns=self.columns), usable, self.columns)
        frame[self.label] = new_y
        # a SMOTE record lies between a real record and one of its neighbours of the same
        # label: the two real records of its label nearest to it are its seeds
        seeds: dict[int, list[str]] = {}
        for lab in frame[self.label].unique():
            mask = (frame[self.label] == lab).to_numpy()
            own = usable.loc[(y == lab).to_numpy()]
            nn = NearestNeighbors(n_neighbors=min(2, len(own))).fit(
                own[self.columns].to_numpy(dtype=float))
            _, idx = nn.kneighbors(frame.loc[mask, self.columns].to_numpy(dtype=float))
            listed = own["id"].tolist()
            for pos, row in zip(np.flatnonzero(mask), idx, strict=True):
                seeds[int(pos)] = [str(listed[int(i)]) for i in row]
        frame["seed_ids"] = [seeds[i] for i in range(len(frame))]
        frame["generator_params"] = json.dumps(self.params())
        return Made(frame, problems)


class LLMGenerator:
    """Asks a chat model for new records of each label, showing it the guideline and a few
    real examples of that label (the seeds). Stops at the client's caps."""

    name = "llm"

    def __init__(self, client: Any, text_field: str, label_field: str,
                 guideline: list[Any], per_request: int, seed_examples: int,
                 temperature: float) -> None:
        self.client, self.text, self.label = client, text_field, label_field
        self.guideline, self.per_request = guideline, per_request
        self.seed_examples, self.temperature = seed_examples, temperature

    def params(self) -> dict[str, Any]:
        return {"model": self.client.model, "temperature": self.temperature,
                "per_request": self.per_request}

    def prompt(self, label: str, seeds: list[str], n: int) -> list[dict[str, str]]:
        guide = "\n".join(f"- {g.name}: {g.description or g.name}" for g in self.guideline)
        examples = "\n".join(f"- {s}" for s in seeds)
        return [
            {"role": "system", "content": "You write realistic, varied records for a labelled "
             "dataset. Never copy the examples; write new ones in the same language and "
             "style. Answer with a JSON array only."},
            {"role": "user", "content": f"Labels:\n{guide}\n\nExamples labelled {label}:\n"
             f"{examples}\n\nWrite {n} new records labelled {label} as a JSON array of "
             f'objects {{"{self.text}": "..."}}.'}]

    def generate(self, real: pd.DataFrame, plan: dict[str, int],
                 rng: np.random.Generator) -> Made:
        from lifecycle.synthesize.llm import BudgetExhausted, LLMError, parse_records

        rows: list[dict[str, Any]] = []
        problems: list[str] = []
        for label, n in plan.items():
            pool = real.loc[real[self.label].astype("string") == label]
            made = 0
            while made < n:
                k = min(self.per_request, n - made)
                picks = pool.iloc[rng.choice(len(pool), min(self.seed_examples, len(pool)),
                                             replace=False)] if len(pool) else pool
                try:
                    reply = self.client.complete(
                        self.prompt(label, [str(t) for t in picks[self.text]], k),
                        self.temperature)
                except BudgetExhausted as e:
                    problems.append(f"stopped: {e}")
                    return Made(pd.DataFrame(rows), problems)
                except LLMError as e:
                    problems.append(str(e))
                    return Made(pd.DataFrame(rows), problems)
                records, problem = parse_records(reply, [self.text])
                if problem:
                    self.client.usage.malformed.append(problem)
                    problems.append(f"label {label}: {problem}")
                    if not records:
                        continue  # asked again; the request cap bounds this
                for r in records[:k]:
                    rows.append({self.text: r[self.text], self.label: label,
                                 "seed_ids": [str(i) for i in picks["id"]],
                                 "generator_params": json.dumps(self.params())})
                made += len(records[:k])
        return Made(pd.DataFrame(rows), problems)


class ImageAugmenter:
    """Label-preserving edits of real images with Pillow: a horizontal flip, a crop (resized
    back to the seed's size), a small rotation, colour jitter (brightness, contrast,
    saturation). Each candidate is one seed with one or two edits, written to the work bucket
    under its content address."""

    name = "image_augment"

    def __init__(self, ctx: Any, label: str, cfg: Any, fmt: str, quality: int) -> None:
        self.ctx, self.label, self.cfg = ctx, label, cfg
        self.fmt, self.quality = fmt, quality

    def params(self) -> dict[str, Any]:
        return self.cfg.model_dump()  # type: ignore[no-any-return]

    def edit(self, img: Any, op: str, rng: np.random.Generator) -> tuple[Any, dict[str, Any]]:
        from PIL import Image, ImageEnhance, ImageOps

        cfg = self.cfg
        if op == "flip":
            return ImageOps.mirror(img), {"op": "flip"}
        if op == "crop":
            share = float(rng.uniform(cfg.min_crop, 1.0))
            w, h = img.size
            cw, ch = max(1, round(w * share)), max(1, round(h * share))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            out = img.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BILINEAR)
            return out, {"op": "crop", "box": [x, y, cw, ch]}
        if op == "rotate":
            angle = round(float(rng.uniform(-cfg.max_rotation, cfg.max_rotation)), 2)
            fill = 255 if img.mode == "L" else (255, 255, 255)
            return img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=fill), \
                {"op": "rotate", "degrees": angle}
        factors = [round(float(rng.uniform(1 - cfg.jitter, 1 + cfg.jitter)), 3)
                   for _ in range(3)]
        out = ImageEnhance.Brightness(img).enhance(factors[0])
        out = ImageEnhance.Contrast(out).enhance(factors[1])
        if out.mode == "RGB":
            out = ImageEnhance.Color(out).enhance(factors[2])
        return out, {"op": "colour", "brightness": factors[0], "contrast": factors[1],
                     "saturation": factors[2]}

    def generate(self, real: pd.DataFrame, asked: dict[str, int],
                 rng: np.random.Generator) -> Made:
        import io

        from PIL import Image

        from lifecycle.media import images
        from lifecycle.records import shards
        from storage import keys

        ctx, ext = self.ctx, {"png": "png", "jpeg": "jpg", "webp": "webp"}[self.fmt]
        prefix = keys.stage_prefix(ctx.dataset, ctx.run_id, "synthesize")
        rows, problems = [], []
        for lab, n in asked.items():
            pool = real.loc[real[self.label].astype("string") == lab]
            if pool.empty:
                problems.append(f"label {lab!r}: no real image to start from")
                continue
            for _ in range(n):
                seed = pool.iloc[int(rng.integers(len(pool)))]
                bucket, key = shards.parse_uri(str(seed["image"]))
                with Image.open(io.BytesIO(ctx.store.get_bytes(bucket, key))) as opened:
                    img = opened.copy()
                chosen = rng.choice(self.cfg.operations,
                                    size=min(len(self.cfg.operations), int(rng.integers(1, 3))),
                                    replace=False)
                done = []
                for op in chosen.tolist():
                    img, info = self.edit(img, str(op), rng)
                    done.append(info)
                body = images.encode(img, self.fmt, self.quality)
                digest = images.sha256(body)
                out_key = f"{prefix}images/{digest}.{ext}"
                if not ctx.store.exists(ctx.work_bucket, out_key):
                    ctx.store.put_bytes(ctx.work_bucket, out_key, body, images.MEDIA[self.fmt])
                rows.append({self.label: lab, "image": f"s3://{ctx.work_bucket}/{out_key}",
                             "image_sha256": digest, "image_format": self.fmt,
                             "width": img.width, "height": img.height,
                             "file_name": f"synthetic/{digest[:16]}.{ext}",
                             "phash": f"{images.perceptual_hash(img):016x}",
                             "seed_ids": [str(seed["id"])],
                             "generator_params": json.dumps({**self.params(),
                                                             "edits": done})})
        return Made(pd.DataFrame(rows), problems)
