"""Markdown tables from the suite's JSON files: ``python -m benchmarks.report FILE.json ...``.

Used to write docs/benchmarks.md, so the numbers there are the JSON's, not retyped.
"""

from __future__ import annotations

import json
import sys

from . import memory, run


def render(path: str) -> str:
    res = json.loads(open(path).read())
    m = res["machine"]
    head = (f"`{path}`: {m['date']}, {m['cpu']} ({m['cpu_count']} cores), torch {m['torch']}, device {m['device']}"
            f"{' (' + m['gpu']['name'] + ')' if 'gpu' in m else ''}; load average at start "
            f"{m['loadavg_start'][0]:.1f}, at end {m.get('loadavg_end', ['?'])[0]}; command `{m['command']}`")
    if "axes" in res:
        lines = [head]
        for axis, rows in res["axes"].items():
            lines += [f"\n{axis} | rule | s/epoch | floor s | % floor | GFLOP", "---|---|---|---|---|---"]
            for r in rows:
                lines.append(f"{r['value']} | {r['rule']}{' +DP' if r['private'] else ''} | {r['seconds']:.3f} | "
                             f"{r['floor_seconds']:.3f} | {r['pct_of_floor']:.1f} | {r['gflop']:.1f}")
        return "\n".join(lines)
    if "batches" in res and "options" not in res:
        return head + "\n" + memory.table(res)
    return head + "\n" + run.table(res)


if __name__ == "__main__":
    print("\n\n".join(render(p) for p in sys.argv[1:]))
