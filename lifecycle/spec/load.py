"""Loading a dataset spec, and saying everything that is wrong with it.

:func:`load_spec` reads a spec file, :func:`parse_spec` its text, :func:`discover` a folder of
them and :func:`check_spec` (``granary check``) lists a file's problems. A spec that cannot be
used raises a :class:`SpecError` holding every problem found, each a :class:`SpecProblem`
naming the file, the line, the field and what to do. The models themselves (what each key
accepts) are lifecycle/spec/model.py's DatasetSpec and the sections it composes; the package
(lifecycle/spec/__init__.py) re-exports these names.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from lifecycle.spec.base import FieldProblem, _Model
from lifecycle.spec.model import DatasetSpec


@dataclass(frozen=True)
class SpecProblem:
    """One thing wrong with a spec: where (file, line, field) and what to do about it."""

    file: str
    problem: str
    field: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        what = f"field '{self.field}': " if self.field else ""
        return f"{where}: {what}{self.problem}"


SHOWN_PROBLEMS = 30
"""How many problems a SpecError's message lists (``granary check`` lists every one)."""


class SpecError(ValueError):
    """A spec that cannot be used, with every problem found in it (``problems``, by line).

    ``str()`` reads ``file:line: field: problem`` for one problem, and a count followed by
    one such line per problem for several. ``file``, ``field``, ``line`` and ``problem`` are
    the first problem's (an unknown key before the rest: it often explains them)."""

    def __init__(self, file: str, problem: str = "", field: str | None = None,
                 line: int | None = None, *, problems: list[SpecProblem] | None = None) -> None:
        self.problems = list(problems) if problems else [SpecProblem(file, problem, field, line)]
        first = self.problems[0]
        self.file, self.field, self.line, self.problem = file, first.field, first.line, \
            first.problem
        super().__init__(_render(file, self.problems))


def _render(file: str, problems: list[SpecProblem]) -> str:
    if len(problems) == 1:
        return str(problems[0])
    shown = sorted(problems, key=lambda p: p.line or 0)[:SHOWN_PROBLEMS]
    more = len(problems) - len(shown)
    return (f"{file}: {len(problems)} problems:\n" + "\n".join(f"  {p}" for p in shown)
            + (f"\n  ... and {more} more (`granary check {file}` lists every one)"
               if more else ""))


class LoadedSpec(_Model):
    spec: DatasetSpec
    path: str
    sha256: str


# ---- loading -------------------------------------------------------------------------------
def _marks(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, key_node.value)
            out[key_path] = key_node.start_mark.line + 1
            _marks(value_node, key_path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = item.start_mark.line + 1
            _marks(item, (*path, i), out)


def _field_name(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


SOURCE_TYPES = ("files", "s3", "http", "sql", "dataset")


def _clean_loc(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """The location of the key an error is about, as the spec writes it: without the tags
    unions add to it (a source's type, as in ``sources, 0, files, path``; a member's type
    below a value, as in ``version, int``)."""
    out: list[Any] = []
    node = data
    for part in loc:
        if len(out) == 2 and out[0] == "sources" and isinstance(out[1], int) \
                and part in SOURCE_TYPES:
            continue
        if isinstance(part, str) and node is not None and not isinstance(node, dict):
            continue  # a key below a list or a plain value: a union member's tag
        out.append(part)
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
    return tuple(out)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...], data: Any) -> list[str]:
    """Keys accepted at ``loc``; a source's keys depend on its ``type``, read from ``data``."""
    current: Any = model
    node = data
    for part in loc[:-1]:
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
        if isinstance(part, int) or current is None:
            continue
        fields = current.model_fields
        key = "schema_" if part == "schema" and "schema_" in fields else part
        info = fields.get(key)
        if info is None:
            return []
        current = _model_of(info.annotation, node)
    if current is None:
        return []
    return sorted(f.alias or n for n, f in current.model_fields.items())


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)


def _model_of(annotation: Any, node: Any = None) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    items = node if isinstance(node, list) else [node]
    tag = next((x.get("type") for x in items if isinstance(x, dict)), None)
    found: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        model = _model_of(arg, node)
        if model is not None:
            found.append(model)
    for model in found:  # a union of sources: the one whose `type` matches
        type_field = model.model_fields.get("type")
        if tag is not None and type_field is not None and tag in getattr(
                type_field.annotation, "__args__", ()):
            return model
    if found:
        return found[0]
    meta = getattr(annotation, "__origin__", None)
    return _model_of(meta, node) if meta is not None and meta is not annotation else None


def parse_spec(text: str, file: str) -> DatasetSpec:
    """The spec in ``text`` (read from ``file``); a SpecError lists every problem in it."""
    spec, problems, _ = _validate(text, file)
    if problems or spec is None:
        raise SpecError(file, problems=problems)
    return spec


def _validate(text: str, file: str) -> tuple[DatasetSpec | None, list[SpecProblem], Any]:
    """The spec, every problem found (by line) and the parsed YAML."""
    try:
        # libyaml's parser where PyYAML has it: 5x faster, and every task loads its spec
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        root = yaml.compose(text, Loader=loader)
        data = yaml.load(text, Loader=loader)  # nosec B506: a safe loader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        return None, [SpecProblem(file, f"invalid YAML: {problem}. Fix the syntax at that "
                                  "line.", line=mark.line + 1 if mark else None)], None
    if not isinstance(data, dict):
        return None, [SpecProblem(file, "a spec must be a YAML mapping of keys (name:, "
                                  "title:, ...)", line=1)], data
    marks: dict[tuple[Any, ...], int] = {}
    if root is not None:
        _marks(root, (), marks)
    try:
        return DatasetSpec.model_validate(data), [], data
    except ValidationError as e:
        return None, _every_problem(e, file, data, marks), data


PASSES = 4
"""How many times a spec with problems is validated again with its wrong keys set aside."""


@dataclass(frozen=True)
class _Found:
    """One validation error: where, what kind (unknown, missing, value), the message, and for
    an unknown key the allowed key it most likely misspells."""

    loc: tuple[Any, ...]
    kind: str
    problem: str
    close: str | None = None


def _every_problem(e: ValidationError, file: str, data: dict[str, Any],
                   marks: dict[tuple[Any, ...], int]) -> list[SpecProblem]:
    """Every problem of the spec, each with its line, unknown keys first.

    A model's own checks (those spanning several keys) run only once every key below it is
    valid, so a typo would hide them, and a wrong value under a misspelt key would show only
    once the typo is fixed. So while there are unknown keys, the spec is validated again with
    them set aside: a misspelt key read under the name it most likely means (the suggestion
    its problem gives), any other unknown key dropped. A wrong value is not set aside: a
    default in its place could raise problems the spec does not have."""
    marks = dict(marks)
    found = _problems(e, data)
    every = list(found)
    seen = {(f.loc, f.problem) for f in found}
    renamed: dict[tuple[Any, ...], str] = {}  # new location -> the key as written
    current = data
    for _ in range(PASSES):
        current, changed = _set_aside(current, found, marks, renamed)
        if not changed:
            break
        try:
            DatasetSpec.model_validate(current)
            break
        except ValidationError as again:
            found = [_as_read(f, renamed) for f in _problems(again, current)]
            found = [f for f in found if (f.loc, f.problem) not in seen]
        seen.update((f.loc, f.problem) for f in found)
        every += found
    problems = [(f.kind == "unknown", SpecProblem(file, f.problem, _field_name(f.loc) or None,
                                                  _line(f, marks))) for f in every]
    # unknown keys first (they often explain the rest), then by line
    problems.sort(key=lambda x: (not x[0], x[1].line or 0))
    return [p for _, p in problems]


def _set_aside(data: dict[str, Any], found: list[_Found], marks: dict[tuple[Any, ...], int],
               renamed: dict[tuple[Any, ...], str]) -> tuple[dict[str, Any], bool]:
    """A copy of ``data`` without the unknown keys in ``found``, and whether there were any:
    a misspelt key renamed to the key it most likely means (its lines recorded under the new
    name in ``marks``, the name as written in ``renamed``), another unknown key dropped."""
    out = copy.deepcopy(data)
    changed = False
    for f in found:
        if f.kind != "unknown" or not f.loc:
            continue
        parent = _at(out, f.loc[:-1])
        if not isinstance(parent, dict) or f.loc[-1] not in parent:
            continue
        value = parent.pop(f.loc[-1])
        changed = True
        if f.close and f.close not in parent:
            parent[f.close] = value
            new = (*f.loc[:-1], f.close)
            renamed[new] = str(f.loc[-1])
            marks.update({(*new, *k[len(f.loc):]): line for k, line in list(marks.items())
                          if k[:len(f.loc)] == f.loc})
    return out, changed


def _as_read(found: _Found, renamed: dict[tuple[Any, ...], str]) -> _Found:
    """``found``, saying so when it is about a misspelt key read as the key suggested."""
    at = next((loc for loc in renamed if found.loc[:len(loc)] == loc), None)
    if at is None:
        return found
    return _Found(found.loc, found.kind, f"(`{renamed[at]}` read as `{at[-1]}`, as suggested) "
                  f"{found.problem}", found.close)


def _at(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        if not isinstance(data, (dict, list)) or not _has(data, part):
            return None
        data = data[part]
    return data


def _problems(e: ValidationError, data: Any) -> list[_Found]:
    """Every validation error as a problem at its key, with a fix. A missing key that an
    unknown key beside it misspells is one problem (the misspelling), not two."""
    misspelt: set[tuple[Any, ...]] = set()
    found: list[_Found] = []
    for err in e.errors():
        if err["type"] != "extra_forbidden":
            continue
        loc = _clean_loc(tuple(err["loc"]), data)
        allowed = _allowed_keys(DatasetSpec, loc, data)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            misspelt.add((*loc[:-1], close[0]))
        hint = f" Did you mean '{close[0]}'?" if close else ""
        found.append(_Found(loc, "unknown", f"unknown key.{hint} Allowed here: "
                            f"{', '.join(allowed)}.", close[0] if close else None))
    wrong: dict[tuple[Any, ...], tuple[list[str], str]] = {}
    for err in e.errors():
        if err["type"] == "extra_forbidden":
            continue
        loc = _clean_loc(tuple(err["loc"]), data)
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldProblem):  # a validator named the key below its model
            found.append(_Found((*loc, *cause.loc), "value", f"{cause}."))
        elif err["type"] == "missing":
            if loc not in misspelt:
                found.append(_Found(loc, "missing", f"this key is required but missing: add "
                                    f"`{loc[-1]}:` here (docs/spec.md describes it)."))
        else:  # a value a union refuses has one error per member: one problem says them all
            msgs, _ = wrong.setdefault(loc, ([], _got(err, loc)))
            msg = str(err["msg"]).removeprefix("Value error, ").rstrip(".")
            if msg not in msgs:
                msgs.append(msg)
    found += [_Found(loc, "value", f"{'; or '.join(msgs)}{got}.")
              for loc, (msgs, got) in wrong.items()]
    return found


GOT_CHARS = 80
"""A value longer than this (as written by repr) is not repeated in its error."""


def _got(err: Any, loc: tuple[Any, ...]) -> str:
    """`` (got <value>)`` for an error about one key's value; nothing for an error about the
    whole spec (its value is the spec), a check spanning several keys (its message names
    what matters) or a long value (a whole section)."""
    shown = repr(err.get("input"))
    if not loc or err["type"] == "spec" or len(shown) > GOT_CHARS:
        return ""
    return f" (got {shown})"


def _line(found: _Found, marks: dict[tuple[Any, ...], int]) -> int | None:
    """The line of the key ``found`` is about, or of the nearest key above it; a missing
    key's is its parent's."""
    loc = found.loc
    line = next((marks[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in marks), None)
    if line is None and found.kind == "missing":
        parent = loc[:-1]
        line = marks.get(parent, 1) if parent else 1
    return line


def check_spec(path: Path | str, inbox: Path | None = None) -> list[SpecProblem]:
    """Every problem of the spec file at ``path`` ([] when it loads): what ``granary check``
    reports. With ``inbox``, also the files the spec names there that are not there and
    that only an evaluation would miss (``quality.profile.reference``: the evaluation warns
    and goes on without it)."""
    try:
        loaded = load_spec(path)
    except SpecError as e:
        return e.problems
    return _inbox_problems(loaded, inbox) if inbox is not None else []


def _inbox_problems(loaded: LoadedSpec, inbox: Path) -> list[SpecProblem]:
    """The spec's profile reference, when it is not a file under ``inbox``."""
    reference = loaded.spec.quality.profile.reference
    if reference is None:
        return []
    root = inbox.resolve()
    where = (root / reference).resolve()
    if where.is_relative_to(root) and where.is_file():
        return []
    text = Path(loaded.path).read_text(encoding="utf-8")
    line = next((i + 1 for i, ln in enumerate(text.splitlines())
                 if re.search(r"\breference\s*:", ln)), None)
    why = ("resolves outside the inbox" if not where.is_relative_to(root)
           else "is not a file")
    return [SpecProblem(loaded.path, f"{reference!r} {why} {root}: put the reference file "
                        "(CSV, TSV, JSONL or Parquet) there, or remove the key to profile the "
                        "newest published version", field="quality.profile.reference",
                        line=line)]


def load_spec(path: Path | str) -> LoadedSpec:
    """The spec file at ``path``; a SpecError lists every problem in it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError(str(path), f"cannot read the spec: {e.strerror}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(str(path), "the spec is not UTF-8 text") from e
    spec, problems, data = _validate(text, str(path))
    name = data.get("name") if isinstance(data, dict) else None
    if isinstance(name, str) and name != path.stem and not any(
            p.field == "name" for p in problems):
        line = next((i + 1 for i, ln in enumerate(text.splitlines())
                     if re.match(r"^name\s*:", ln)), None)
        problems.append(SpecProblem(str(path), f"name {name!r} must match the file name "
                                    f"{path.stem!r}: rename one of them.", field="name",
                                    line=line))
    if problems or spec is None:
        raise SpecError(str(path), problems=problems)
    return LoadedSpec(spec=spec, path=str(path), sha256=hashlib.sha256(raw).hexdigest())


def discover(folder: Path) -> tuple[list[LoadedSpec], list[SpecError]]:
    """Every ``*.yaml``/``*.yml`` spec in ``folder``: the good ones and the errors of the rest."""
    good: list[LoadedSpec] = []
    bad: list[SpecError] = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            good.append(load_spec(path))
        except SpecError as e:
            bad.append(e)
    return good, bad
