"""Safe YAML loading that remembers where every value came from.

PyYAML's ``safe_load`` forgets line numbers; users editing YAML by hand need them. We
compose the node tree once (SafeLoader: no ``!!python`` tags), build the data from it and
keep a map from each value's path to its position, so a problem found later (by pydantic,
by a cross-reference check) can still name file:line:column.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from outreach.errors import Location, Problem

PathKey = tuple[str | int, ...]


@dataclass
class YamlDoc:
    file: str
    data: Any
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Iterable[str | int], field_name: str | None = None) -> Location:
        """The location of ``path``, or of its nearest ancestor that exists."""
        key = tuple(path)
        dotted = field_name if field_name is not None else dotted_path(key)
        while True:
            pos = self.key_positions.get(key) or self.positions.get(key)
            if pos is not None or not key:
                break
            key = key[:-1]
        if pos is None:
            return Location(self.file, None, None, dotted or None)
        return Location(self.file, pos[0], pos[1], dotted or None)


def dotted_path(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _RecursiveAlias(Exception):
    def __init__(self, node: yaml.Node) -> None:
        super().__init__("recursive alias")
        self.node = node


class _AliasBomb(Exception):
    def __init__(self, path: PathKey, size: int) -> None:
        super().__init__("aliases expand too far")
        self.path = path
        self.size = size


# Aliases may repeat a value, not multiply a file: expanded (every alias written out), a
# file may be this many times its own length (plus a little), which no hand-written use
# of anchors comes near and a "billion laughs" file of nested aliases exceeds at once.
ALIAS_EXPANSION_FACTOR = 4
ALIAS_EXPANSION_SLACK = 100_000


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Characters and nodes the tree would hold with every alias written out; each node is
    counted once and its size reused, so this is linear in the file, not in the result."""
    ident = id(node)
    known = sizes.get(ident)
    if known is not None:
        return known
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(
            _expanded_size(key, sizes) + _expanded_size(value, sizes) for key, value in node.value
        )
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, sizes) for item in node.value)
    else:
        size = 1 + len(str(node.value))
    sizes[ident] = size
    return size


def _check_expansion(root: yaml.Node, aliases: list[tuple[PathKey, yaml.Node]], text: str) -> None:
    """Refuse a file whose aliases expand it beyond ALIAS_EXPANSION_FACTOR times its length:
    code that turns a value into text (a name, an error message) would build all of it."""
    sizes: dict[int, int] = {}
    total = _expanded_size(root, sizes)
    if total <= ALIAS_EXPANSION_FACTOR * len(text) + ALIAS_EXPANSION_SLACK:
        return
    heaviest = max(aliases, key=lambda alias: sizes.get(id(alias[1]), 0))
    raise _AliasBomb(heaviest[0], total)


def _walk(
    node: yaml.Node,
    path: PathKey,
    doc: YamlDoc,
    problems: list[Problem],
    active: set[int] | None = None,
    done: set[int] | None = None,
    aliases: list[tuple[PathKey, yaml.Node]] | None = None,
) -> None:
    """Record positions. An alias (``*name``) is the same node object as its anchor:
    one that contains itself is refused, and a node already walked is not walked again
    (so a file of nested aliases cannot make this exponential); where such a node is met
    again (an alias) is kept in ``aliases``."""
    active = set() if active is None else active
    done = set() if done is None else done
    aliases = [] if aliases is None else aliases
    doc.positions[path] = _mark(node)
    ident = id(node)
    if ident in active:
        raise _RecursiveAlias(node)
    if ident in done:
        aliases.append((path, node))
        return
    if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        return
    done.add(ident)
    active.add(ident)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            if key in seen:
                line, col = _mark(key_node)
                problems.append(
                    Problem(
                        f"duplicate key `{key}` (first at line {seen[key]}); "
                        "YAML keeps only the last one",
                        Location(doc.file, line, col, dotted_path(path + (key,))),
                        "remove or merge one of them",
                    )
                )
            seen[key] = _mark(key_node)[0]
            doc.key_positions[path + (key,)] = _mark(key_node)
            _walk(value_node, path + (key,), doc, problems, active, done, aliases)
    else:
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), doc, problems, active, done, aliases)
    active.discard(ident)


def load_yaml(path: Path, display: str | None = None) -> tuple[YamlDoc | None, list[Problem]]:
    """Load one YAML file. Returns (doc, problems); doc is None when unreadable."""
    shown = display or str(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        return None, [Problem("file not found", Location(shown), "create it or fix the path")]
    except UnicodeDecodeError as exc:
        return None, [
            Problem(
                f"not UTF-8 (byte {exc.start})",
                Location(shown),
                "save the file as UTF-8",
            )
        ]
    except OSError as exc:
        return None, [Problem(f"cannot read: {exc.strerror}", Location(shown))]
    return parse_yaml(text, shown)


_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")


def _line_of(text: str, index: int) -> int:
    """1-based line of a character offset, counting line breaks as YAML does."""
    return len(_LINE_BREAK.findall(text, 0, max(0, min(index, len(text))))) + 1


def _codepoint(character: object) -> int:
    return character if isinstance(character, int) else ord(str(character)[:1] or "\0")


def parse_yaml(text: str, shown: str) -> tuple[YamlDoc | None, list[Problem]]:
    """Parse YAML text safely. Never raises: every failure becomes a located Problem."""
    problems: list[Problem] = []
    loader: yaml.SafeLoader | None = None
    doc: YamlDoc | None = None
    try:
        loader = yaml.SafeLoader(text)  # the reader already checks the characters here
        node = loader.get_single_node()
        if node is None:
            return YamlDoc(shown, None), problems
        data = loader.construct_document(node)  # an alias shares its anchor's object
        doc = YamlDoc(shown, data)
        aliases: list[tuple[PathKey, yaml.Node]] = []
        _walk(node, (), doc, problems, aliases=aliases)
        if aliases:
            _check_expansion(node, aliases, text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        col = mark.column + 1 if mark else None
        what = exc.problem or "YAML error"
        hint = "check indentation, colons and quotes around this point"
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in what:
            what = f"refused YAML tag ({what.strip()})"
            hint = "only plain YAML is allowed: remove the `!!…` tag"
        return None, [Problem(f"YAML syntax error: {what}", Location(shown, line, col), hint)]
    except yaml.reader.ReaderError as exc:
        return None, [
            Problem(
                f"character U+{_codepoint(exc.character):04X} is not allowed in YAML",
                Location(shown, _line_of(text, exc.position)),
                "remove it or save the file as plain UTF-8 text",
            )
        ]
    except yaml.YAMLError as exc:  # pragma: no cover - other errors without marks
        return None, [Problem(f"YAML error: {exc}", Location(shown), "check the file's syntax")]
    except _RecursiveAlias as exc:
        line, col = _mark(exc.node)
        return None, [
            Problem(
                "an alias (`*name`) refers to the list or mapping that contains it",
                Location(shown, line, col),
                "YAML anchors may not contain themselves: write the value out",
            )
        ]
    except _AliasBomb as exc:
        return None, [
            Problem(
                f"aliases (`*name`) expand this file to over {exc.size:,} characters, "
                f"more than {ALIAS_EXPANSION_FACTOR} times its length",
                doc.where(exc.path) if doc is not None else Location(shown),
                "write the values out: an alias of a list of aliases multiplies",
            )
        ]
    except RecursionError:
        return None, [
            Problem(
                "nested too deeply to read",
                Location(shown),
                "flatten the structure; settings, people and campaigns are only a few levels deep",
            )
        ]
    finally:
        if loader is not None:
            loader.dispose()
    return doc, problems


def known_keys(model: type[BaseModel]) -> set[str]:
    """Every field name a model (and its nested models) accepts."""
    names: set[str] = set()
    seen: set[type] = set()

    def visit(m: type[BaseModel]) -> None:
        if m in seen:
            return
        seen.add(m)
        for name, info in m.model_fields.items():
            names.add(info.alias or name)
            for arg in _nested_models(info.annotation):
                visit(arg)

    visit(model)
    return names


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_nested_models(arg))
    return found


def suggest(word: str, candidates: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return match[0] if match else None


_HINTS: dict[str, str] = {
    "int_parsing": "write a whole number, e.g. 30",
    "int_type": "write a whole number, e.g. 30",
    "int_from_float": "write a whole number, e.g. 30",
    "float_parsing": "write a number, e.g. 0.5",
    "float_type": "write a number, e.g. 0.5",
    "bool_parsing": "write true or false",
    "bool_type": "write true or false",
    "string_type": "write text; put it in quotes if YAML reads it as a number, date or list",
    "list_type": "write a list: `[a, b]`, or one `- item` per line",
    "tuple_type": "write a list: `[a, b]`, or one `- item` per line",
    "dict_type": "write a mapping: `key: value` lines indented under this key",
    "model_type": "write a mapping: `key: value` lines indented under this key",
    "model_attributes_type": "write a mapping: `key: value` lines indented under this key",
    "greater_than": "use a value within the allowed range",
    "greater_than_equal": "use a value within the allowed range",
    "less_than": "use a value within the allowed range",
    "less_than_equal": "use a value within the allowed range",
    "too_short": "add at least one item",
    "too_long": "remove some items",
    "datetime_parsing": "write a date and time with its zone, e.g. 2026-12-01T09:00+02:00",
    "datetime_from_date_parsing": "write a date and time with its zone, "
    "e.g. 2026-12-01T09:00+02:00",
    "datetime_type": "write a date and time with its zone, e.g. 2026-12-01T09:00+02:00",
}
_LOCAL_TEXT_HINT = "write text, or one text per language: `{fi: …, en: …}`"
_MISSING = object()


def _strip_union_tags(loc: tuple[Any, ...], data: Any) -> tuple[PathKey, bool]:
    """Drop the union member names pydantic puts into ``loc`` (``str``, ``dict[str,str]``),
    telling them from real keys by walking the data itself. Returns (path, had_tag)."""
    out: list[str | int] = []
    had_tag = False
    cur = data
    for part in loc:
        if (
            isinstance(cur, dict)
            and part in cur
            or isinstance(cur, list)
            and isinstance(part, int)
            and 0 <= part < len(cur)
        ):
            cur = cur[part]
        elif _is_union_tag(part):
            had_tag = True
            continue
        else:
            cur = _MISSING
        out.append(part)
    return tuple(out), had_tag


def _data_at(data: Any, path: PathKey) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return data


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)[:60]


def pydantic_problems(
    exc: ValidationError,
    doc: YamlDoc,
    prefix: PathKey,
    model: type[BaseModel],
) -> list[Problem]:
    """Turn pydantic's errors into Problems that point into the YAML file, each with a hint.

    A value that fits no member of a union (``subject: 5`` for text-or-mapping) gives one
    problem, not one per member; a member that got further (``subject: {fi: [1]}``) wins.
    """
    vocabulary = known_keys(model)
    base = _data_at(doc.data, prefix)
    found = []
    for err in exc.errors():
        loc, had_tag = _strip_union_tags(tuple(err["loc"]), base)
        found.append((loc, had_tag, err))
    deepest: dict[PathKey, int] = {}
    for loc, had_tag, _ in found:
        if had_tag:
            for n in range(len(loc) + 1):
                deepest[loc[:n]] = max(deepest.get(loc[:n], 0), len(loc))
    groups: dict[object, tuple[PathKey, list[Any]]] = {}
    for index, (loc, had_tag, err) in enumerate(found):
        if had_tag and deepest.get(loc, 0) > len(loc):
            continue  # another member of the union matched this value further down
        merge = had_tag and err["type"] not in ("extra_forbidden", "missing")
        key: object = ("union", loc) if merge else index
        groups.setdefault(key, (loc, []))[1].append(err)
    return [_problem(loc, errs, doc, prefix, vocabulary) for loc, errs in groups.values()]


def _problem(
    loc: PathKey, errs: list[Any], doc: YamlDoc, prefix: PathKey, vocabulary: set[str]
) -> Problem:
    err = errs[0]
    kind = err["type"]
    path = prefix + loc
    hint: str | None
    if kind == "extra_forbidden":
        key = str(loc[-1]) if loc else "?"
        guess = suggest(key, vocabulary)
        advice = f"did you mean `{guess}`?" if guess else "remove it; see the documented keys"
        return Problem(f"unknown key `{key}`", doc.where(path), advice)
    if kind == "missing":
        message = f"missing required key `{loc[-1] if loc else '?'}`"
        return Problem(message, doc.where(path[:-1], dotted_path(path)), "add it")
    got = _shown(err.get("input"))
    if len(errs) > 1:
        kinds = {e["type"] for e in errs}
        wanted = " or ".join(str(e["msg"]).removeprefix("Input should be ") for e in errs)
        hint = (
            _LOCAL_TEXT_HINT
            if kinds == {"dict_type", "string_type"}
            else " / ".join(dict.fromkeys(_HINTS.get(k, "") for k in kinds if k in _HINTS))
            or "see the documented format"
        )
        return Problem(f"should be {wanted} (got {got})", doc.where(path), hint)
    msg = str(err["msg"])
    if kind == "value_error":
        # Our validators phrase what would be right; show it as the hint.
        advice = msg.removeprefix("Value error, ")
        shown = f" {got}" if not isinstance(err.get("input"), dict | list) else ""
        return Problem(f"invalid value{shown}", doc.where(path), advice)
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        guess = suggest(str(err.get("input")), allowed) if allowed else None
        hint = f"did you mean `{guess}`?" if guess else f"use one of: {', '.join(allowed)}"
        return Problem(f"{msg} (got {got})", doc.where(path), hint)
    return Problem(
        f"{msg} (got {got})", doc.where(path), _HINTS.get(kind, "see the documented format")
    )


def _is_union_tag(part: Any) -> bool:
    # pydantic inserts the union member's name ("str", "dict[str,str]") into loc.
    return isinstance(part, str) and (
        part in {"str", "int", "float", "bool", "list", "dict"}
        or "[" in part
        or part.startswith("function-")
    )
