"""The example workspace: the repository root in a checkout, ``outreach/example`` in a wheel."""

from __future__ import annotations

import shutil
from pathlib import Path

from .errors import ConfigError

EXAMPLE_PARTS = ("outreach.yaml", "people", "campaigns")


def example_root() -> Path:
    packaged = Path(__file__).parent / "example"
    if (packaged / "outreach.yaml").is_file():
        return packaged
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "outreach.yaml").is_file():
        return checkout
    raise ConfigError(
        "the example workspace is missing from this installation", hint="reinstall outreach"
    )


def init_workspace(target: Path) -> list[Path]:
    """Copy the example into ``target``. Never overwrites: refuses if anything would clash."""
    source = example_root()
    files: list[tuple[Path, Path]] = []
    for part in EXAMPLE_PARTS:
        src = source / part
        if src.is_dir():
            for f in sorted(src.rglob("*")):
                if f.is_file() and "__pycache__" not in f.parts:
                    files.append((f, target / part / f.relative_to(src)))
        else:
            files.append((src, target / part))
    clashes = [dst for _, dst in files if dst.exists()]
    if clashes:
        raise ConfigError(
            f"{target} already has {clashes[0].relative_to(target)}"
            + (f" and {len(clashes) - 1} more file(s)" if len(clashes) > 1 else ""),
            hint="init never overwrites: choose an empty or new folder",
        )
    for src, dst in files:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    (target / "templates").mkdir(exist_ok=True)
    readme = target / "templates" / "README.md"
    if not readme.exists():
        readme.write_text(
            "Templates here override the built-in ones of the same name "
            "(e.g. newsletter.html.j2, newsletter.txt.j2).\n",
            encoding="utf-8",
        )
    return [dst for _, dst in files]
