"""Files stay inside the workspace (issue #18, item 2).

A template (an included one too), a photo and a relative DKIM ``key_file`` are resolved,
through every ``..`` and symbolic link, and refused when they land outside the workspace
(or a folder of ``allowed_paths:``): `check` names the file and the reason at its line,
`preview` and `send` refuse with the same, and the outside file's content is never read
into a message. The variants are generated: links to files and to folders, at several
depths inside templates/ and outside the workspace, spelled absolute or as ``../``, direct
or through a second link. Photos that are not images, truncated, 40 MB or linked out of the
workspace end in a clear error naming the file, with nothing sent.
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path

import pytest
from foundation_helpers import cli, copy_example, edit, find_problem, line_of
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parent.parent
BUILTIN = REPO / "outreach" / "templates"
SECRET = "OUTSIDE-THE-WORKSPACE-7f3a"
CAMPAIGN = "rdm-launch-2026"
LIAISONS = "people/liaisons.yaml"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-files")


def workspace(parent: Path) -> tuple[Path, Path]:
    """(a fresh example workspace with one campaign, a folder outside it), in a new folder
    of ``parent``: each hypothesis example gets its own."""
    base = Path(tempfile.mkdtemp(dir=parent))
    root = copy_example(base / "ws")
    for other in ("familiar-faces-2027.yaml", "newsletter-autumn-2026.yaml"):
        (root / "campaigns" / other).unlink()
    outside = base / "outside"
    outside.mkdir()
    return root, outside


def including(root: Path, name: str) -> None:
    """A workspace copy of the built-in newsletter that includes ``name``."""
    (root / "templates").mkdir(exist_ok=True)
    for suffix in ("html.j2", "txt.j2"):
        text = (BUILTIN / f"newsletter.{suffix}").read_text(encoding="utf-8")
        if suffix == "html.j2":
            text = text.replace(
                "<title>{{ subject }}</title>", f'<title>{{% include "{name}" %}}</title>', 1
            )
        (root / "templates" / f"newsletter.{suffix}").write_text(text, encoding="utf-8")


def link(at: Path, target: Path, relative: bool) -> None:
    at.parent.mkdir(parents=True, exist_ok=True)
    at.symlink_to(os.path.relpath(target, at.parent) if relative else target)


def nothing_leaked(root: Path) -> None:
    """The outside file's content is in no file of the workspace (preview, outbox, db)."""
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert SECRET.encode() not in path.read_bytes(), path


def outbox_messages(root: Path) -> list[Path]:
    return sorted((root / "outbox" / "new").glob("*")) if (root / "outbox").exists() else []


# ----------------------------------------------------------------------------- templates

link_cases = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["file", "folder"]),
        "inside_depth": st.integers(0, 3),  # folders between templates/ and the link
        "outside_depth": st.integers(0, 3),  # folders between the outside root and the target
        "relative": st.booleans(),  # ../../outside/… or /tmp/…/outside/…
        "through_workspace": st.booleans(),  # templates/x -> ../people/hop -> outside
    }
)


@settings(
    max_examples=10, phases=[Phase.explicit, Phase.generate]
)  # no shrinking: each example runs the CLI
@given(case=link_cases)
def test_a_link_out_of_templates_is_a_located_error(scratch: Path, case: dict) -> None:
    root, outside = workspace(scratch)
    folder = outside.joinpath(*(f"d{i}" for i in range(case["outside_depth"])))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "secret.txt").write_text(SECRET, encoding="utf-8")
    target = folder / "secret.txt" if case["kind"] == "file" else folder
    sub = [f"s{i}" for i in range(case["inside_depth"])]
    at = root.joinpath("templates", *sub, "leak.txt" if case["kind"] == "file" else "inc")
    if case["through_workspace"]:
        hop = root / "people" / "hop"
        link(hop, target, case["relative"])
        target = hop
    link(at, target, case["relative"])
    name = "/".join([*sub, "leak.txt" if case["kind"] == "file" else "inc/secret.txt"])
    including(root, name)

    run = cli(root, "check")
    assert run.code == 1, run
    shown = at.relative_to(root).as_posix()
    p = find_problem(run, contains="outside the workspace", file=shown, line=None)
    assert "symbolic link" in p.message
    # rendering refuses it too, at the template's line, before reading the file
    find_problem(run, contains="leads outside the workspace", file="templates/newsletter.html.j2")
    assert SECRET not in run.output


def test_preview_and_send_refuse_a_template_linked_out(tmp_path: Path) -> None:
    root, outside = workspace(tmp_path)
    (outside / "secret.txt").write_text(SECRET, encoding="utf-8")
    link(root / "templates" / "leak.txt", outside / "secret.txt", relative=True)
    including(root, "leak.txt")
    for args in (("preview", CAMPAIGN), ("send", CAMPAIGN, "--now", "--transport", "outbox")):
        run = cli(root, *args)
        assert run.code == 1, run
        find_problem(run, contains="outside the workspace", file="templates/leak.txt", line=None)
    assert not (root / "preview").exists()
    assert outbox_messages(root) == []
    nothing_leaked(root)


def test_a_link_that_stays_inside_the_workspace_is_fine(tmp_path: Path) -> None:
    root, _ = workspace(tmp_path)
    (root / "snippets").mkdir()
    (root / "snippets" / "greeting.txt").write_text("INSIDE-GREETING", encoding="utf-8")
    link(root / "templates" / "greeting.txt", root / "snippets" / "greeting.txt", relative=True)
    including(root, "greeting.txt")
    run = cli(root, "check")
    assert run.code == 0, run
    run = cli(root, "preview", CAMPAIGN, "--sample")
    assert run.code == 0, run
    assert any(b"INSIDE-GREETING" in p.read_bytes() for p in (root / "preview").rglob("*.eml"))


@pytest.mark.parametrize("spelled", ["absolute", "relative"])
def test_templates_folder_linked_out_needs_allowed_paths(tmp_path: Path, spelled: str) -> None:
    root, outside = workspace(tmp_path)
    shared = outside / "shared-templates"
    shared.mkdir()
    text = (BUILTIN / "newsletter.html.j2").read_text(encoding="utf-8")
    (shared / "newsletter.html.j2").write_text(text.replace("<title>", "<title>SHARED-", 1))
    link(root / "templates", shared, relative=spelled == "relative")

    run = cli(root, "check")
    assert run.code == 1, run
    find_problem(
        run,
        contains="templates/ leads outside the workspace",
        file="templates/",
        line=None,
        hint="allowed_paths",
    )
    run = cli(root, "preview", CAMPAIGN)
    assert run.code == 1, run
    assert not (root / "preview").exists()

    allowed = str(outside) if spelled == "absolute" else os.path.relpath(outside, root)
    (root / "outreach.yaml").write_text(
        (root / "outreach.yaml").read_text(encoding="utf-8") + f"allowed_paths: [{allowed}]\n"
    )
    run = cli(root, "check")
    assert run.code == 0, run
    run = cli(root, "preview", CAMPAIGN, "--sample")
    assert run.code == 0, run
    assert any(b"SHARED-" in p.read_bytes() for p in (root / "preview").rglob("*.eml"))


# ----------------------------------------------------------------------------- photos

photo_cases = st.fixed_dictionaries(
    {
        "how": st.sampled_from(["absolute", "dotdot", "link", "linked-folder"]),
        "outside_depth": st.integers(0, 3),
        "relative_link": st.booleans(),
        "who": st.sampled_from(["aino", "lars", "emily"]),
    }
)


def photo_outside(root: Path, outside: Path, case: dict) -> tuple[str, int]:
    """Point one liaison's photo outside the workspace as ``case`` says; (what `photo:`
    now says, its line in liaisons.yaml)."""
    folder = outside.joinpath(*(f"d{i}" for i in range(case["outside_depth"])))
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / "face.jpg"
    image.write_bytes((root / "people" / "photos" / "aino.jpg").read_bytes())
    old = f"photo: people/photos/{case['who']}.jpg"
    if case["how"] == "absolute":
        written = str(image)
    elif case["how"] == "dotdot":
        written = os.path.relpath(image, root)
    elif case["how"] == "link":
        written = "people/photos/linked.jpg"
        link(root / written, image, case["relative_link"])
    else:
        written = "people/faces/face.jpg"
        link(root / "people" / "faces", folder, case["relative_link"])
    line = edit(root / LIAISONS, old, f"photo: {written}")
    return written, line


@settings(
    max_examples=10, phases=[Phase.explicit, Phase.generate]
)  # no shrinking: each example runs the CLI
@given(case=photo_cases)
def test_a_photo_outside_the_workspace_is_a_located_error(scratch: Path, case: dict) -> None:
    root, outside = workspace(scratch)
    written, line = photo_outside(root, outside, case)
    run = cli(root, "check")
    assert run.code == 1, run
    p = find_problem(run, contains="leads outside the workspace", file=LIAISONS, line=line)
    assert written in p.message and "allowed_paths" in (p.hint or "")


def test_preview_and_send_refuse_a_photo_outside_and_allowed_paths_lets_it_in(
    tmp_path: Path,
) -> None:
    root, outside = workspace(tmp_path)
    written, line = photo_outside(
        root,
        outside,
        {"how": "absolute", "outside_depth": 1, "relative_link": False, "who": "aino"},
    )
    for args in (("preview", CAMPAIGN), ("send", CAMPAIGN, "--now", "--transport", "outbox")):
        run = cli(root, *args)
        assert run.code == 1, run
        find_problem(run, contains="leads outside the workspace", file=LIAISONS, line=line)
    assert not (root / "preview").exists() and outbox_messages(root) == []

    (root / "outreach.yaml").write_text(
        (root / "outreach.yaml").read_text(encoding="utf-8") + f"allowed_paths: [{outside}]\n"
    )
    assert cli(root, "check").code == 0
    run = cli(root, "preview", CAMPAIGN, "--sample")
    assert run.code == 0, run


def test_the_service_photo_is_checked_too(tmp_path: Path) -> None:
    root, outside = workspace(tmp_path)
    (outside / "service.png").write_bytes((root / "people" / "photos" / "service.png").read_bytes())
    line = edit(
        root / "outreach.yaml",
        "photo: people/photos/service.png",
        f"photo: {outside / 'service.png'}",
    )
    run = cli(root, "check")
    assert run.code == 1, run
    find_problem(
        run,
        contains="leads outside the workspace",
        file="outreach.yaml",
        line=line,
        field="service.photo",
    )


# ----------------------------------------------------------------------------- bad photos


def _not_an_image(path: Path) -> None:
    path.write_bytes(b"this is no photo\n" * 10)


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _forty_megabytes(path: Path) -> None:
    # a JPEG's first bytes, then 40 MB that decode to nothing
    head = path.read_bytes()[:600]
    with path.open("wb") as f:
        f.write(head)
        chunk = os.urandom(1 << 20)
        for _ in range(40):
            f.write(chunk)


BAD_PHOTOS = {"not-an-image": _not_an_image, "truncated": _truncated, "40-MB": _forty_megabytes}


@pytest.mark.parametrize("who", ["aino", "lars", "mikko"])  # early, late, an expert
@pytest.mark.parametrize("bad", [*BAD_PHOTOS, "linked-out"])
def test_a_bad_photo_is_a_clear_error_naming_it_and_nothing_is_sent(
    tmp_path: Path, bad: str, who: str
) -> None:
    root, outside = workspace(tmp_path)
    photo = root / "people" / "photos" / f"{who}.jpg"
    if bad == "linked-out":
        (outside / photo.name).write_bytes(photo.read_bytes())
        photo.unlink()
        photo.symlink_to(outside / photo.name)
    else:
        BAD_PHOTOS[bad](photo)
    run = cli(root, "send", CAMPAIGN, "--now", "--transport", "outbox")
    assert run.code in (1, 2), run
    assert f"people/photos/{who}.jpg" in run.stderr, run
    assert outbox_messages(root) == []  # refused before the first message, not at this face
    run = cli(root, "check")
    assert run.code == 1, run
    assert f"people/photos/{who}.jpg" in run.output


# ----------------------------------------------------------------------------- DKIM keys


def _ed25519_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(0o600)


@pytest.mark.parametrize("how", ["dotdot", "link", "linked-folder"])
def test_a_relative_key_file_may_not_lead_out_of_the_workspace(tmp_path: Path, how: str) -> None:
    root, outside = workspace(tmp_path)
    _ed25519_key(outside / "keys" / "dkim.key")
    if how == "dotdot":
        written = os.path.relpath(outside / "keys" / "dkim.key", root)
    elif how == "link":
        written = "dkim.key"
        link(root / written, outside / "keys" / "dkim.key", relative=False)
    else:
        written = "keys/dkim.key"
        link(root / "keys", outside / "keys", relative=True)
    with (root / "outreach.yaml").open("a") as f:
        f.write(f"dkim: {{selector: s2026, key_file: {written}}}\n")
    line = line_of(root / "outreach.yaml", "dkim:")
    run = cli(root, "check")
    assert run.code == 1, run
    find_problem(
        run,
        contains="leads outside the workspace",
        file="outreach.yaml",
        line=line,
        field="dkim.key_file",
        hint="absolute path",
    )
    run = cli(root, "send", CAMPAIGN, "--now", "--transport", "outbox")
    assert run.code in (1, 2), run
    assert outbox_messages(root) == []


@pytest.mark.parametrize("where", ["absolute", "allowed"])
def test_a_key_file_named_outright_or_allowed_is_used(tmp_path: Path, where: str) -> None:
    root, outside = workspace(tmp_path)
    _ed25519_key(outside / "etc-outreach" / "dkim.key")
    if where == "absolute":  # as README shows: /etc/outreach/dkim.pem
        written, extra = str(outside / "etc-outreach" / "dkim.key"), ""
    else:
        written = os.path.relpath(outside / "etc-outreach" / "dkim.key", root)
        extra = f"allowed_paths: [{outside / 'etc-outreach'}]\n"
    with (root / "outreach.yaml").open("a") as f:
        f.write(f"dkim: {{selector: s2026, key_file: {written}}}\n{extra}")
    run = cli(root, "check")
    assert run.code == 0, run
    run = cli(root, "send", CAMPAIGN, "--now", "--transport", "outbox", "--limit", "1")
    assert run.code == 0, run
    assert b"DKIM-Signature:" in outbox_messages(root)[0].read_bytes()


@pytest.mark.parametrize("spelled", ["dotdot", "absolute"])
def test_a_campaign_cannot_name_a_template_outside(tmp_path: Path, spelled: str) -> None:
    root, outside = workspace(tmp_path)
    (root / "templates").mkdir()
    for suffix in ("html.j2", "txt.j2"):
        text = (BUILTIN / f"newsletter.{suffix}").read_text(encoding="utf-8")
        (outside / f"evil.{suffix}").write_text(text.replace("<title>", f"<title>{SECRET}", 1))
    stem = outside / "evil"
    name = str(stem) if spelled == "absolute" else os.path.relpath(stem, root / "templates")
    line = edit(
        root / "campaigns" / f"{CAMPAIGN}.yaml", "template: newsletter", f"template: {name}"
    )
    run = cli(root, "check")
    assert run.code == 1, run
    find_problem(run, contains="does not exist", file=f"campaigns/{CAMPAIGN}.yaml", line=line)
    run = cli(root, "preview", CAMPAIGN)
    assert run.code == 1, run
    nothing_leaked(root)


@pytest.mark.parametrize(
    "statement",
    [
        '{% include "PATH" %}',
        '{% import "PATH" as m %}',
        '{% from "PATH" import x %}',
        '{% include ["nothing-here", "PATH"] %}',
        '{% include "PATH" ignore missing %}',
    ],
)
@pytest.mark.parametrize("spelled", ["absolute", "workspace", "builtin"])
def test_a_subject_or_body_cannot_pull_in_a_file(
    tmp_path: Path, statement: str, spelled: str
) -> None:
    root, outside = workspace(tmp_path)
    (outside / "secret.txt").write_text(SECRET, encoding="utf-8")
    (root / "templates").mkdir()
    part = "PART-OF-TEMPLATES-2b91"
    (root / "templates" / "part.txt").write_text(part, encoding="utf-8")
    name = {
        "absolute": str(outside / "secret.txt"),
        "workspace": "part.txt",  # a file of templates/: still not for a campaign's strings
        "builtin": "_signature.txt.j2",
    }[spelled]
    line = edit(
        root / "campaigns" / f"{CAMPAIGN}.yaml",
        "Dear {{ researcher.greeting_name }},",
        "Dear {{ researcher.greeting_name }}, " + statement.replace("PATH", name),
    )
    run = cli(root, "check")
    assert run.code == 1, run
    assert "no loader" not in run.output, run
    find_problem(
        run,
        contains="cannot include, import or extend",
        file=f"campaigns/{CAMPAIGN}.yaml",
        line=line,
    )
    run = cli(root, "send", CAMPAIGN)
    assert run.code == 1 and "cannot include, import or extend" in run.stderr, run
    # readers of the other languages may have been sent theirs before: none holds the file
    assert not any(part.encode() in m.read_bytes() for m in outbox_messages(root))
    nothing_leaked(root)
