"""Benchmark: load and check a workspace of 50,000 researchers.

    python bench/bench_load.py [--n 50000] [--repeat 3] [--profile]

Generates a workspace in a temporary folder (the example's settings, liaisons, experts and
campaigns; a researchers.csv of N people spread over the example's faculties, departments and
units, with Finnish, Swedish and English names), then times
``outreach.message.check.run_check(render=False)``: settings, people and campaigns loaded and
validated, every address checked, every campaign's audience selected, every researcher
assigned a liaison. For comparison it times the minimum any tool must do on the same file: a
plain ``csv.DictReader`` + ``email_validator.validate_email`` loop.

Prints the figures and a machine-readable line ``RESULT load_check_50k_seconds=…``.
The target is under 3 s for 50,000 researchers.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import gc
import io
import pstats
import random
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET_SECONDS = 3.0
FIRST = [
    "Aino", "Eeva", "Jääskeläinen", "Ville", "Päivi", "Åsa", "Björn", "Sofía", "Emily",
    "Liam", "Noah", "Ilse", "Zoë", "Jean-Luc", "Mary-Kate", "Ólafur", "Ярослава", "美咲",
]  # fmt: skip
LAST = [
    "Virtanen", "Mäkinen", "Ström", "Ekström", "O'Brien", "D'Angelo", "Smith-Jones",
    "Nordqvist", "Löfgren", "Korhonen", "Åberg", "Wójcik", "Müller", "Nguyễn", "Ковальчук",
    "van der Berg",
]  # fmt: skip
TAGS = ["", "", "", "professor", "phd", "do-not-contact", "professor|phd"]


def example_root() -> Path:
    from outreach.workspace.example import example_root as root

    return root()


def make_workspace(folder: Path, n: int, seed: int = 2026) -> Path:
    """A workspace like the example, with ``n`` researchers. Returns its root."""
    src = example_root()
    shutil.copy2(src / "outreach.yaml", folder / "outreach.yaml")
    shutil.copytree(src / "campaigns", folder / "campaigns")
    (folder / "people").mkdir()
    for name in ("liaisons.yaml", "experts.yaml"):
        shutil.copy2(src / "people" / name, folder / "people" / name)
    shutil.copytree(src / "people" / "photos", folder / "people" / "photos")
    # Segments as they occur in the example's own researchers.
    with (src / "people" / "researchers.csv").open(encoding="utf-8-sig", newline="") as f:
        combos = sorted({(r["faculty"], r["department"], r["unit"]) for r in csv.DictReader(f)})
    rng = random.Random(seed)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["email", "name", "first_name", "faculty", "department", "unit", "language", "tags"])
    for i in range(n):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        faculty, department, unit = rng.choice(combos)
        w.writerow(
            [
                f"researcher.{i:06d}@uni.example",
                f"{first} {last}",
                first,
                faculty,
                department,
                unit,
                rng.choice(["fi", "sv", "en"]),
                rng.choice(TAGS),
            ]
        )
    (folder / "people" / "researchers.csv").write_text(out.getvalue(), encoding="utf-8")
    return folder


def baseline(csv_path: Path) -> int:
    """The floor: read the CSV and validate every address, nothing else."""
    from email_validator import EmailNotValidError, validate_email

    ok = 0
    with csv_path.open(encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            try:
                validate_email(row["email"], check_deliverability=False)
                ok += 1
            except EmailNotValidError:
                pass
    return ok


def outreach_check(root: Path) -> Any:
    from outreach.message.check import run_check

    return run_check(explicit=root, render=False)


def clear_caches() -> None:
    """Each run starts cold: no address cached from the previous run."""
    from outreach.workspace import people

    cache_clear = getattr(people.normalise_address, "cache_clear", None)
    if cache_clear is not None:
        cache_clear()


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        clear_caches()
        gc.collect()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def peak_memory(fn: Callable[[], Any]) -> float:
    """Peak Python allocation during one run, in MiB (tracemalloc; slows the run itself)."""
    clear_caches()
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def peak_rss() -> float:
    """The process's peak resident set size in MiB (whole run, all phases)."""
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="researchers (default 50000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one run")
    parser.add_argument("--keep", action="store_true", help="keep the generated workspace")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="outreach-bench-"))
    try:
        t0 = time.perf_counter()
        root = make_workspace(folder, args.n)
        csv_path = root / "people" / "researchers.csv"
        size = csv_path.stat().st_size / 2**20
        print(f"workspace: {root} ({args.n} researchers, {size:.1f} MiB CSV, "
              f"generated in {time.perf_counter() - t0:.2f} s)")  # fmt: skip

        base_s, ok = timed(lambda: baseline(csv_path), args.repeat)
        check_s, report = timed(lambda: outreach_check(root), args.repeat)
        peak = peak_memory(lambda: outreach_check(root))
        errors = [p for p in report.problems if p.severity == "error"]

        print(f"baseline  csv.DictReader + validate_email: {base_s:6.3f} s "
              f"({args.n / base_s:,.0f} rows/s, {ok} valid)")  # fmt: skip
        print(f"outreach  run_check(render=False):         {check_s:6.3f} s "
              f"({args.n / check_s:,.0f} rows/s, {report.researchers} researchers, "
              f"{report.campaigns} campaigns, {len(errors)} error(s))")  # fmt: skip
        print(f"outreach takes {check_s / base_s:.2f}x the baseline's time; peak memory: "
              f"{peak:.1f} MiB traced Python, {peak_rss():.0f} MiB process RSS")  # fmt: skip
        for p in errors[:5]:
            print(f"  error: {p}")
        scaled = check_s * 50_000 / args.n
        verdict = "met" if scaled < TARGET_SECONDS else "MISSED"
        print(f"target: < {TARGET_SECONDS:.0f} s for 50,000 researchers: {verdict} "
              f"({scaled:.3f} s scaled to 50,000)")  # fmt: skip
        print(f"RESULT load_check_50k_seconds={scaled:.3f}")

        if args.profile:
            clear_caches()
            prof = cProfile.Profile()
            prof.enable()
            outreach_check(root)
            prof.disable()
            pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(30)
        return 0 if scaled < TARGET_SECONDS and not errors else 1
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
