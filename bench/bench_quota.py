"""Benchmark: pacing under quotas (moved out of bench_send.py, which now times `outreach
send` as a user runs it).

    python bench/bench_quota.py [--skip-real-quota]

10 liaisons with uneven segments through ``scheduler.simulate`` (virtual clock, 30/min and
10,000/day per mailbox; and a multi-day case): makespan against the theoretical minimum
(target within 1.05x). Then the real send loop, on the wall clock, for 10 liaisons at
300/min against Postfix's smtp-sink: the same comparison for the code that actually sends.

Prints ``RESULT key=value`` lines for scripts.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from send_workspace import example_root, smtp_sink, write_settings  # noqa: E402

TARGET_MAKESPAN = 1.05

# ---------------------------------------------------------------------------- quotas


def lower_bound(n: int, per_minute: int, per_day: int) -> float:
    """Earliest possible last send of one mailbox sending n messages, evenly paced."""
    if n <= 0:
        return 0.0
    spacing = 60.0 / per_minute
    days, rest = divmod(n - 1, per_day)
    return max((n - 1) * spacing, days * 86400.0 + rest * spacing)


def quota_simulated(sizes: list[int], per_minute: int, per_day: int) -> tuple[float, float]:
    from outreach.deliver.scheduler import simulate

    makespan, _ = simulate({f"liaison{i}": n for i, n in enumerate(sizes)}, per_minute, per_day)
    ideal = max(lower_bound(n, per_minute, per_day) for n in sizes)
    return makespan, ideal


def quota_real(folder: Path, port: int, sizes: list[int], per_minute: int) -> tuple[float, float]:
    """The real send loop on the wall clock: 10 liaisons, uneven segments, one quota each."""
    from outreach.deliver.run import send_campaign
    from outreach.deliver.send_options import SendOptions
    from outreach.workspace.loader import load_workspace

    src = example_root()
    folder.mkdir()
    shutil.copy2(src / "outreach.yaml", folder / "outreach.yaml")
    (folder / "campaigns").mkdir()
    shutil.copytree(src / "people", folder / "people")
    shutil.copy2(src / "people" / "experts.yaml", folder / "people" / "experts.yaml")
    liaisons = [
        {
            "id": f"l{i}",
            "name": f"Liaison Number{i}",
            "email": f"liaison{i}@uni.example",
            "title": {"en": "Liaison Librarian"},
            "photo": "people/photos/aino.jpg",
            "languages": ["en"],
            "segments": [{"faculty": f"Faculty {i}"}],
        }
        for i in range(len(sizes))
    ]
    (folder / "people" / "liaisons.yaml").write_text(yaml.safe_dump(liaisons), "utf-8")
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["email", "name", "first_name", "faculty", "department", "unit", "language", "tags"])
    for i, n in enumerate(sizes):
        for j in range(n):
            w.writerow(
                [f"r{i}.{j}@uni.example", f"R{j} S{i}", f"R{j}", f"Faculty {i}", "", "", "en", ""]
            )
    (folder / "people" / "researchers.csv").write_text(out.getvalue(), encoding="utf-8")
    campaign = {
        "id": "quota",
        "title": "Quota run",
        "template": "newsletter",
        "sender": "liaison",
        "subject": {"en": "{{ researcher.first_name }}, news"},
        "body": {"en": "Dear {{ researcher.first_name }},\n\nnews.\n\n{{ sender.name }}\n"},
    }
    (folder / "campaigns" / "quota.yaml").write_text(yaml.safe_dump(campaign), "utf-8")
    write_settings(
        folder, port, limits={"per_sender_per_minute": per_minute, "per_sender_per_day": 10000}
    )
    ws = load_workspace(explicit=folder)
    errors = ws.errors()
    if errors:
        sys.exit("quota workspace invalid: " + "; ".join(str(p) for p in errors[:3]))
    summary = send_campaign(ws, "quota", SendOptions(now=True))
    if summary.final["sent"] != sum(sizes):
        sys.exit(f"quota run sent {summary.final['sent']} of {sum(sizes)}")
    ideal = max(lower_bound(n, per_minute, 10000) for n in sizes)
    return summary.elapsed, ideal


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-real-quota", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OUTREACH_SECRET", "bench-secret")
    os.environ.pop("OUTREACH_DATABASE_URL", None)
    ok = True
    sizes = [2400, 1500, 1100, 800, 600, 450, 300, 160, 70, 20]
    for label, pm, pd in (("one day", 30, 10000), ("multi-day", 30, 1000)):
        makespan, ideal = quota_simulated(sizes, pm, pd)
        ratio_q = makespan / ideal
        verdict = "met" if ratio_q <= TARGET_MAKESPAN else "MISSED"
        print(
            f"quota sim  ({label}) 10 liaisons {sizes}, {pm}/min, {pd}/day: makespan "
            f"{makespan / 3600:.2f} h vs minimum {ideal / 3600:.2f} h = {ratio_q:.4f}x "
            f"(target <= {TARGET_MAKESPAN}x: {verdict})"
        )
        key = label.replace(" ", "_").replace("-", "_")
        print(f"RESULT quota_sim_{key}_makespan_ratio={ratio_q:.4f}")
        ok = ok and ratio_q <= TARGET_MAKESPAN
    if not args.skip_real_quota:
        folder = Path(tempfile.mkdtemp(prefix="outreach-bench-quota-"))
        try:
            with smtp_sink() as port:
                real_sizes = [60, 45, 38, 30, 24, 18, 12, 8, 4, 1]
                pm = 300
                real, ideal = quota_real(folder / "quota", port, real_sizes, pm)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        ratio_r = real / ideal
        verdict = "met" if ratio_r <= TARGET_MAKESPAN else "MISSED"
        print(
            f"quota real 10 liaisons {real_sizes}, {pm}/min each: send loop "
            f"{real:.2f} s vs minimum {ideal:.2f} s = {ratio_r:.3f}x "
            f"(target <= {TARGET_MAKESPAN}x: {verdict})"
        )
        print(f"RESULT quota_real_makespan_ratio={ratio_r:.3f}")
        ok = ok and ratio_r <= TARGET_MAKESPAN
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
