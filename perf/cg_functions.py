#!/usr/bin/env python3
"""Per-symbol costs from a callgrind output file.

callgrind_annotate groups costs by (source file, function), so code inlined
from wire/ into pipeline/ shows as many small rows. This sums them per function
symbol, which is what "top functions" means here:

    cg_functions.py FILE [FRAMES] [TOP]

prints the top functions by self and by inclusive cost, with the number of
calls, and instructions per frame when FRAMES is given (then first the
inclusive cost per frame of process() and of the verdict counting).
"""

import re
import sys
from collections import defaultdict


# Functions whose inclusive cost per frame is printed first.
HEADLINE = ("sluice_pipeline::process", "sluice_perf::Counters::count")


def parse(path):
    names = {}
    self_cost = defaultdict(int)
    incl_calls = defaultdict(int)
    calls = defaultdict(int)
    fn = None
    pending_call = None  # (callee, count) waiting for its cost line
    total = 0

    def name(kind_value):
        m = re.match(r"\((\d+)\)(?: (.*))?$", kind_value)
        if not m:
            return kind_value
        ident, text = m.group(1), m.group(2)
        if text is not None:
            names[ident] = text
        return names.get(ident, ident)

    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("fn="):
                fn = name(line[3:])
            elif line.startswith("cfn="):
                callee = name(line[4:])
                pending_call = [callee, 0]
            elif line.startswith("calls="):
                pending_call[1] = int(line[6:].split()[0])
            elif line.startswith("summary:"):
                total = int(line.split()[1])
            elif line and (line[0].isdigit() or line[0] in "+-*"):
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if pending_call is not None and pending_call[1]:
                    callee, count = pending_call
                    incl_calls[fn] += cost
                    calls[callee] += count
                    pending_call = None
                else:
                    self_cost[fn] += cost
            elif "=" in line and not line.startswith(("cfi=", "cfl=", "cob=")):
                # ob=, fl=, fi=, fe=: a new position context, not a call.
                pending_call = None
    funcs = set(self_cost) | set(incl_calls)
    incl = {f: self_cost[f] + incl_calls[f] for f in funcs}
    return total, self_cost, incl, calls


def main():
    path = sys.argv[1]
    frames = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 12
    total, self_cost, incl, calls = parse(path)

    def row(f, cost):
        per = f"{cost / frames:9.1f}" if frames else ""
        share = 100.0 * cost / total if total else 0.0
        return f"{cost:>14,} {share:6.2f}% {per} {calls.get(f, 0):>10} {f}"

    if frames:
        for f in HEADLINE:
            if f in incl:
                print(f"{f}: {incl[f] / frames:.1f} Ir/frame inclusive ({calls.get(f, 0)} calls)")
        print()
    head = f"{'Ir':>14} {'share':>7} {'Ir/frame':>9} {'calls':>10} function"
    for title, table in (("self", self_cost), ("inclusive", incl)):
        print(f"-- by {title} cost (total Ir {total:,}) --")
        print(head)
        rows = sorted(table.items(), key=lambda kv: -kv[1])
        # With FRAMES, only per-frame functions (the driver's main and the
        # runtime start-up frames are called once).
        rows = [(f, c) for f, c in rows if c and (not frames or calls.get(f, 0) >= frames // 10)]
        for f, cost in rows[:top]:
            print(row(f, cost))
        print()


if __name__ == "__main__":
    main()
