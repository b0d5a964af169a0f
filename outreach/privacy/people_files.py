"""A person's rows in the workspace's people files: found, and removed atomically.

``people_entries`` finds every place that lists an address: people/researchers.csv (or
.yaml), liaisons.yaml, experts.yaml and the service address in outreach.yaml.
``remove_from_people`` takes a researcher's records out of researchers.csv (or .yaml), only
the lines of those records, every other byte kept, written atomically (``forget
--from-people``).
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from outreach.audience.suppressions import normalise
from outreach.errors import ConfigError, Location, StoreError

if TYPE_CHECKING:
    from outreach.workspace.loader import Workspace


@dataclass
class PeopleEntry:
    """Where a person is listed in the workspace's people files."""

    role: str  # researcher | liaison | expert | service
    file: str  # as the user sees it (relative to the workspace)
    line: int | None
    end_line: int | None  # last line of the record (researchers: removable span)
    fields: dict[str, Any]
    removable: bool = False
    person_id: str | None = None

    @property
    def location(self) -> Location:
        return Location(self.file, self.line)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "role": self.role, "fields": self.fields}


def _csv_records(raw: bytes) -> tuple[str, list[str], list[tuple[int, int, list[str]]], str]:
    """(text, physical lines, records as (first line, last line, cells), BOM)."""
    bom = "\ufeff" if raw.startswith(b"\xef\xbb\xbf") else ""
    text = raw.decode("utf-8-sig")
    lines = list(io.StringIO(text, newline=""))  # the same lines the loader's csv reader sees
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    reader = csv.reader(iter(lines), delimiter=delimiter)
    records: list[tuple[int, int, list[str]]] = []
    previous = 0
    try:
        for row in reader:
            records.append((previous + 1, reader.line_num, row))
            previous = reader.line_num
    except csv.Error:
        pass  # the loader reports it; rows before it are still found
    return text, lines, records, bom


def _researchers_csv(path: Path, shown: str, address: str) -> list[PeopleEntry]:
    try:
        _, _, records, _ = _csv_records(path.read_bytes())
    except (OSError, UnicodeDecodeError):
        return []
    if not records:
        return []
    header = [h.strip().lower() for h in records[0][2]]
    if "email" not in header:
        return []
    col = header.index("email")
    out = []
    for start, end, row in records[1:]:
        if len(row) > col and row[col].strip() and normalise(row[col]) == address:
            cells = dict(zip(records[0][2], row, strict=False))
            out.append(PeopleEntry("researcher", shown, start, end, cells, removable=True))
    return out


def _yaml_items(text: str) -> tuple[yaml.Node | None, list[yaml.Node]]:
    """The sequence of researchers in a researchers.yaml node tree, and its items."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None, []
    seq: yaml.Node | None = root
    if isinstance(root, yaml.MappingNode):
        seq = next(
            (
                v
                for k, v in root.value
                if isinstance(k, yaml.ScalarNode) and k.value == "researchers"
            ),
            None,
        )
    if not isinstance(seq, yaml.SequenceNode):
        return None, []
    return seq, list(seq.value)


def _item_email(node: yaml.Node) -> str | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == "email" and isinstance(v, yaml.ScalarNode):
            return str(v.value)
    return None


def _yaml_spans(text: str, address: str) -> list[tuple[int, int, yaml.Node, bool]]:
    """(first line, last line, node, removable) of each item listing ``address`` (1-based)."""
    seq, items = _yaml_items(text)
    if seq is None:
        return []
    out = []
    for i, item in enumerate(items):
        value = _item_email(item)
        if value is None or normalise(value) != address:
            continue
        start = item.start_mark.line + 1
        if i + 1 < len(items):
            end = items[i + 1].start_mark.line  # the line before the next item starts
        else:
            mark = seq.end_mark
            end = mark.line if mark.column == 0 else mark.line + 1
        removable = not bool(getattr(seq, "flow_style", False)) and end >= start
        out.append((start, max(start, end), item, removable))
    return out


def _researchers_yaml(path: Path, shown: str, address: str) -> list[PeopleEntry]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return []
    out = []
    for start, end, node, removable in _yaml_spans(text, address):
        try:
            fields = yaml.safe_load(yaml.serialize(node)) or {}
        except yaml.YAMLError:
            fields = {}
        out.append(PeopleEntry("researcher", shown, start, end, fields, removable=removable))
    return out


def people_entries(ws: Workspace, address: str) -> list[PeopleEntry]:
    """Every place in people/ and outreach.yaml that lists ``address``."""
    people = ws.root / "people"
    out: list[PeopleEntry] = []
    csv_path, yaml_path = people / "researchers.csv", people / "researchers.yaml"
    if csv_path.is_file():
        out += _researchers_csv(csv_path, "people/researchers.csv", address)
    elif yaml_path.is_file():
        out += _researchers_yaml(yaml_path, "people/researchers.yaml", address)
    d = ws.directory
    for role, persons, doc, file in (
        ("liaison", d.liaisons, d.liaison_docs, "people/liaisons.yaml"),
        ("expert", d.experts, d.expert_docs, "people/experts.yaml"),
    ):
        for person in persons.values():
            if normalise(person.email) == address:
                line = _doc_line(doc, person.id)
                fields = person.model_dump(mode="json", exclude_none=True)
                out.append(PeopleEntry(role, file, line, None, fields, person_id=person.id))
    if normalise(d.service.email) == address:
        where = ws.settings_doc.where(("service", "email")) if ws.settings_doc else Location()
        fields = {"name": d.service.name, "email": d.service.email}
        out.append(PeopleEntry("service", "outreach.yaml", where.line, None, fields))
    return out


def _doc_line(doc: Any, person_id: str) -> int | None:
    if doc is None:
        return None
    data = doc.data
    base: tuple[str, ...] = ()
    if isinstance(data, dict) and len(data) == 1:
        key = next(iter(data))
        data, base = data[key], (key,)
    if isinstance(data, list):
        for i, item in enumerate(data):
            if isinstance(item, dict) and item.get("id") == person_id:
                line: int | None = doc.where((*base, i)).line
                return line
    return None


def write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_from_people(root: Path, address: str) -> list[PeopleEntry]:
    """Remove the records of ``address`` from people/researchers.csv (or .yaml).

    Only the physical lines of those records go; every other byte (quoting, delimiter,
    BOM, line endings, comments) stays. Written atomically and checked by reading the file
    back; on any doubt the original is put back and an error raised. No backup copy is
    left behind (it would keep the person's data).
    """
    people = root / "people"
    csv_path, yaml_path = people / "researchers.csv", people / "researchers.yaml"
    if csv_path.is_file():
        path, shown = csv_path, "people/researchers.csv"
        raw = path.read_bytes()
        _, lines, _, bom = _csv_records(raw)
        entries = _researchers_csv(path, shown, address)
    elif yaml_path.is_file():
        path, shown = yaml_path, "people/researchers.yaml"
        raw = path.read_bytes()
        bom = "\ufeff" if raw.startswith(b"\xef\xbb\xbf") else ""
        lines = list(io.StringIO(raw.decode("utf-8-sig"), newline=""))
        entries = _researchers_yaml(path, shown, address)
    else:
        return []
    if not entries:
        return []
    for entry in entries:
        if not entry.removable:
            raise ConfigError(
                f"{address} is listed in a form outreach cannot remove safely",
                location=entry.location,
                hint="remove the entry by hand (a one-line flow list `[...]`), then forget again",
            )
    drop: set[int] = set()
    for entry in entries:
        assert entry.line is not None and entry.end_line is not None
        drop.update(range(entry.line, entry.end_line + 1))
    kept = [line for n, line in enumerate(lines, 1) if n not in drop]
    new = (bom + "".join(kept)).encode("utf-8")
    write_atomically(path, new)
    left = (
        _researchers_csv(path, shown, address)
        if path.suffix == ".csv"
        else _researchers_yaml(path, shown, address)
    )
    if left or len(kept) != len(lines) - len(drop):
        write_atomically(path, raw)
        raise StoreError(
            f"could not remove {address} from {shown} safely; the file is unchanged",
            hint="remove the row by hand, then forget again",
        )
    return entries


__all__ = ["PeopleEntry", "people_entries", "remove_from_people", "write_atomically"]
