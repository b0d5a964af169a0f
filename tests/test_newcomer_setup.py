"""A set-up a newcomer can follow (issue #15, item 7): `outreach init` writes a commented
`mailboxes:` example that works once uncommented, and the next step printed after the
quickstart and after `init` works as typed, with the virtual environment's `outreach`
off the PATH."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from foundation_helpers import REPO, copy_example, run_cli

from outreach.track.mailboxes import imap_source, plan
from outreach.workspace.loader import load_workspace

pytestmark = pytest.mark.timeout(180)

NEWSLETTER = "newsletter-autumn-2026"


def uncomment_mailboxes(settings: Path) -> None:
    """The commented `# mailboxes:` block with its `# ` taken away, as a user would."""
    lines = settings.read_text(encoding="utf-8").splitlines()
    start = lines.index("# mailboxes:")
    end = start
    while end < len(lines) and lines[end].startswith("# "):
        end += 1
    lines[start:end] = [x[2:] for x in lines[start:end]]
    settings.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_init_writes_a_mailboxes_example_that_works_uncommented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "new"
    run = run_cli(["init", str(root)])
    assert run.code == 0, run
    assert "commented `mailboxes:` example" in run.stdout
    text = (root / "outreach.yaml").read_text(encoding="utf-8")
    assert "\nmailboxes:" not in text  # commented: nothing is read until it is edited
    uncomment_mailboxes(root / "outreach.yaml")
    check = run_cli(["-w", str(root), "check", "--no-render"])
    assert check.code == 0, check
    assert "0 error(s), 0 warning(s)" in check.stderr, check

    ws = load_workspace(explicit=root, only_campaigns=[])
    boxes = {b.name: b for b in ws.settings.mailboxes}
    assert set(boxes) == set(ws.directory.liaisons)  # one per liaison
    passwords = {n: b for n, b in boxes.items() if b.password_env}
    assert len(passwords) == 4 and all(b.url.startswith("imaps://") for b in passwords.values())
    m365 = boxes["helena"]
    assert m365.url == "imaps://outlook.office365.com/INBOX" and m365.oauth_token_command

    # read as written: each password from its variable, the token from its command
    for name, box in passwords.items():
        monkeypatch.setenv(str(box.password_env), f"pw-of-{name}")
    helper = tmp_path / "bin" / m365.oauth_token_command.split()[0]
    helper.parent.mkdir()
    helper.write_text("#!/bin/sh\necho token-for-$1\n", encoding="utf-8")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
    planned = plan(ws, [], sorted(boxes))
    assert [p.error for p in planned] == [None] * 5
    sources = {p.box.name: imap_source(ws, p) for p in planned if p.box}
    for name in passwords:
        assert sources[name].password == f"pw-of-{name}"
        assert sources[name].username and sources[name].host == "imap.uni.example"
    helena = sources["helena"]
    assert helena.oauth_token == f"token-for-{m365.oauth_token_command.split()[1]}"
    assert (helena.host, helena.port, helena.username) == (
        "outlook.office365.com",
        993,
        "helena.sundstrom@uni.example",
    )
    assert helena.folders == ["INBOX", "Junk Email"]


# ----------------------------------------------------------------------------- next steps


def venv_workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder as after the quickstart's first step: the example and `.venv` (this
    interpreter's environment), and a shell whose PATH does not have the venv on it."""
    folder = copy_example(tmp_path / "checkout")
    venv = Path(sys.prefix)
    assert (venv / "bin" / "outreach").is_file(), "tests run from a venv with outreach"
    (folder / ".venv").symlink_to(venv)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "OUTREACH_SECRET": "newcomer-test-secret",
        "LANG": "C.UTF-8",
    }
    return folder, env


def sh(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def next_steps(stdout: str) -> tuple[str, str]:
    """The command after `Next: `, and the activation variant: `. ACTIVATE; COMMAND`."""
    typed = re.search(r"^Next: (.+)$", stdout, re.M)
    assert typed, stdout
    alt = re.search(r"^  \(or, once per shell, `(.+?)`; then `(.+?)`\)$", stdout, re.M)
    assert alt, stdout
    return typed[1], f"{alt[1]}; {alt[2]}"


def test_the_quickstart_ends_with_a_next_step_that_works_as_typed(tmp_path: Path) -> None:
    folder, env = venv_workspace(tmp_path)
    assert sh("command -v outreach", folder, env).returncode != 0  # not on the PATH
    done = sh(f".venv/bin/outreach send {NEWSLETTER}", folder, env)
    assert done.returncode == 0, done
    typed, activated = next_steps(done.stdout)
    assert typed == f".venv/bin/outreach status {NEWSLETTER}"
    assert activated == f". .venv/bin/activate; outreach status {NEWSLETTER}"
    for command in (typed, activated):
        status = sh(command, folder, env)
        assert status.returncode == 0, (command, status)
        assert "rehearsed" in status.stdout, status


def test_init_ends_with_a_next_step_that_works_as_typed(tmp_path: Path) -> None:
    folder, env = venv_workspace(tmp_path)
    made = sh(".venv/bin/outreach init 'my workspace'", folder, env)
    assert made.returncode == 0, made
    typed, activated = next_steps(made.stdout)
    exe = folder / ".venv" / "bin" / "outreach"
    assert typed == f"cd 'my workspace' && {exe} check"  # absolute: it runs after the cd
    for command in (typed, activated):
        check = sh(command, folder, env)
        assert check.returncode == 0, (command, check)
        assert "0 error(s)" in check.stderr, check


def test_with_outreach_on_the_path_the_hint_says_outreach(tmp_path: Path) -> None:
    folder, env = venv_workspace(tmp_path)
    env["PATH"] = f"{folder / '.venv' / 'bin'}:{env['PATH']}"
    made = sh("outreach init fresh", folder, env)
    assert made.returncode == 0, made
    assert "Next: cd fresh && outreach check\n" in made.stdout
    assert "once per shell" not in made.stdout
