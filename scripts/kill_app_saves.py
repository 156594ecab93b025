"""Kill a real saving Retake window many times, at random instants and at each file rename of a save, and
check every project it leaves: it must reopen unrepaired as one whole state (the prompt, the mask and
the parameters of the same save), the last one the app reported saved or the one after it, and take
the next save without debris. tests/gui/save_killer.py forks the apps and checks the projects;
tests/gui/test_save_kills.py does the same with 35 kills.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/kill_app_saves.py --kills 300 [--max-delay 0.3] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.gui.save_killer import Killer, check, make_template  # noqa: E402

RENAMES = [(point, when) for point in (1, 2) for when in ("before", "after")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=300, help="kills at random instants")
    parser.add_argument("--max-delay", type=float, default=0.3,
                        help="latest kill, seconds after the first save is reported")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    problems: list[str] = []
    outcomes: collections.Counter = collections.Counter()
    kills = [(f"replace-{when}", point) for point, when in RENAMES]
    kills += [("random", rng.uniform(0, args.max_delay)) for _ in range(args.kills)]
    with tempfile.TemporaryDirectory(prefix="retake-kills-") as tmp, Killer() as killer:
        template = Path(tmp) / "template.retake"
        make_template(template)
        for i, (mode, value) in enumerate(kills):
            root = Path(tmp) / f"kill-{i}.retake"
            shutil.copytree(template, root)
            result = killer.kill(root, mode, value)
            state, found = check(root, result["saved"])
            if not result["ready"] or result["signal"] != 9:
                found.append(f"the app was not killed as planned: {result}")
            problems += [f"kill {i} ({mode} {value:.3g}, reported {result['saved']}): {text}" for text in found]
            outcomes["the last state reported saved" if state == result["saved"] else
                      "the next state: committed, not yet reported" if state == result["saved"] + 1 else
                      "other"] += 1
            shutil.rmtree(root)
    summary = {"kills": len(kills), "at_each_rename": len(RENAMES), "at_random_instants": args.kills,
               "projects_not_whole": len(problems), "where_the_kills_left_the_project": dict(outcomes),
               "examples": problems[:10], "seconds": round(time.monotonic() - started, 1), "seed": args.seed}
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
