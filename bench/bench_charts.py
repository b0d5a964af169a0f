"""Benchmark: what the HTML pages' charts cost, the figures behind drawing them as SVG
directly instead of with a plotting library.

    python bench/bench_charts.py [--repeat 5] [--keep DIR]

In a workspace made by ``outreach init`` and sent once to its outbox
(``send newsletter-autumn-2026 --now``), best of N fresh processes each:

* ``report --format html`` (three charts) against ``report --format json`` (none), and
  ``coverage --format html`` (one chart) against ``coverage --format json``: the
  differences are what the pages and their charts cost, with each run's peak RSS;
* importing ``outreach.report.formats`` (which brings the chart module) and, when
  matplotlib is installed, ``import matplotlib.pyplot`` on the Agg backend (what the
  charts imported before);
* install size: the files of outreach's runtime dependencies (pyproject.toml's
  ``dependencies`` and theirs), and what matplotlib would add to them, from the installed
  distributions' RECORD files.

Prints ``RESULT report_html_cpu_seconds=… report_json_cpu_seconds=…
coverage_html_cpu_seconds=… formats_import_ms=… runtime_deps_mb=… matplotlib_adds_mb=…``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
# runs the CLI and reports, when it exits, its CPU seconds (a figure that a busy machine
# disturbs less than wall time) and its peak RSS (KiB on Linux) on stderr
CLI = (
    "import atexit, resource, sys\n"
    "def usage():\n"
    "    u = resource.getrusage(resource.RUSAGE_SELF)\n"
    "    print('USAGE', u.ru_utime + u.ru_stime, u.ru_maxrss, file=sys.stderr)\n"
    "atexit.register(usage)\n"
    "from outreach.cli import main\n"
    "main()\n"
)


def cli(*args: str) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one fresh ``outreach`` process."""
    started = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}
    done = subprocess.run(
        [sys.executable, "-c", CLI, *args], capture_output=True, text=True, env=env
    )
    seconds = time.perf_counter() - started
    usage = re.search(r"USAGE ([\d.]+) (\d+)", done.stderr)
    if done.returncode != 0 or usage is None:
        raise SystemExit(f"outreach {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return seconds, float(usage.group(1)), int(usage.group(2)) // 1024


def best(repeat: int, *args: str) -> tuple[float, float, int]:
    runs = [cli(*args) for _ in range(repeat)]
    return min(r[0] for r in runs), min(r[1] for r in runs), max(r[2] for r in runs)


def import_ms(code: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        timed = f"import time\nt = time.perf_counter()\n{code}\nprint(time.perf_counter() - t)"
        done = subprocess.run([sys.executable, "-c", timed], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-2000:])
        times.append(float(done.stdout.split()[-1]) * 1000)
    return min(times)


def _name(requirement: str) -> str | None:
    req = Requirement(requirement)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        return None
    return re.sub(r"[-_.]+", "-", req.name).lower()


def closure(names: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        todo.extend(n for r in dist.requires or [] if (n := _name(r)) is not None)
    return seen


def installed_mb(names: set[str]) -> float:
    total = 0
    for name in names:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                total += path.stat().st_size
    return total / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="make the workspace here and keep it")
    args = parser.parse_args()

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    deps = [n for r in project["project"]["dependencies"] if (n := _name(r)) is not None]
    runtime = closure(deps)
    print(f"runtime dependencies: {len(runtime)} distributions, {installed_mb(runtime):.1f} MB")
    matplotlib_adds = 0.0
    if "matplotlib" not in runtime and closure(["matplotlib"]):
        extra = closure([*deps, "matplotlib"]) - runtime
        matplotlib_adds = installed_mb(extra)
        print(f"matplotlib would add {matplotlib_adds:.1f} MB: {', '.join(sorted(extra))}")

    formats_ms = import_ms("import outreach.report.formats", args.repeat)
    print(f"import outreach.report.formats: {formats_ms:.0f} ms")
    if closure(["matplotlib"]):
        code = "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot"
        print(f"import matplotlib.pyplot (Agg): {import_ms(code, args.repeat):.0f} ms")

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_charts_"))
    ws = work / "ws"
    try:
        shutil.rmtree(ws, ignore_errors=True)
        cli("init", str(ws))
        # an outbox a local MTA would deliver from: the send counts, so the report has figures
        # (to a plain outbox it would be a rehearsal, which reports leave out)
        settings = ws / "outreach.yaml"
        text = settings.read_text(encoding="utf-8")
        assert "  kind: outbox\n" in text, "the example's transport changed"
        delivering = text.replace("  kind: outbox\n", "  kind: outbox\n  delivers: true\n", 1)
        settings.write_text(delivering, encoding="utf-8")
        cli("-w", str(ws), "send", "newsletter-autumn-2026", "--now")
        figures = {}
        for command in ("report", "coverage"):
            for fmt in ("html", "json"):
                out = work / f"{command}.{fmt}"
                wall, cpu, rss = best(
                    args.repeat, "-w", str(ws), command, "--format", fmt, "--out", str(out)
                )
                figures[f"{command}_{fmt}"] = cpu
                print(
                    f"{command} --format {fmt}: best of {args.repeat} {wall:.2f} s wall, "
                    f"{cpu:.2f} s CPU; peak RSS {rss} MB"
                )
        charts = (work / "report.html").read_text(encoding="utf-8").count("<svg")
        print(f"report.html: {charts} charts, {(work / 'report.html').stat().st_size} bytes")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"RESULT report_html_cpu_seconds={figures['report_html']:.2f} "
        f"report_json_cpu_seconds={figures['report_json']:.2f} "
        f"coverage_html_cpu_seconds={figures['coverage_html']:.2f} "
        f"formats_import_ms={formats_ms:.0f} runtime_deps_mb={installed_mb(runtime):.1f} "
        f"matplotlib_adds_mb={matplotlib_adds:.1f}"
    )


if __name__ == "__main__":
    main()
