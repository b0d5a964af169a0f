"""The example workspace: the repository root in a checkout, ``outreach/example`` in a wheel."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from outreach.errors import ConfigError

EXAMPLE_PARTS = ("outreach.yaml", "people", "campaigns")


def example_root() -> Path:
    packaged = Path(__file__).parent.parent / "example"
    if (packaged / "outreach.yaml").is_file():
        return packaged
    checkout = Path(__file__).resolve().parent.parent.parent
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
    created: list[Path] = []  # files and folders made here, removed again on failure
    try:
        for folder in (target, *(dst.parent for _, dst in files), target / "templates"):
            for d in reversed([folder, *folder.parents]):
                if not d.exists():
                    d.mkdir()
                    created.append(d)
        for src, dst in files:
            shutil.copy2(src, dst)
            created.append(dst)
        readme = target / "templates" / "README.md"
        if not readme.exists():
            readme.write_text(
                "Templates here override the built-in ones of the same name "
                "(e.g. newsletter.html.j2, newsletter.txt.j2).\n",
                encoding="utf-8",
            )
            created.append(readme)
    except OSError as exc:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir() if path.is_dir() else path.unlink()
        raise ConfigError(
            f"cannot create the workspace in {target}: {exc.strerror or exc}"
            + (f" ({exc.filename})" if exc.filename else ""),
            hint="choose a folder you can write to; nothing was left behind",
        ) from None
    return [dst for _, dst in files]
