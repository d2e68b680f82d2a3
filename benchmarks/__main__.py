"""Run every ``benchmarks/bench_*.py`` (or those named on the command line)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import benchmarks


def main(argv: list[str]) -> int:
    names = sorted(
        info.name
        for info in pkgutil.iter_modules(benchmarks.__path__)
        if info.name.startswith("bench_")
    )
    wanted = [f"bench_{arg.removeprefix('bench_')}" for arg in argv] or names
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"bench: unknown benchmark {', '.join(unknown)}; have {', '.join(names)}")
        return 2
    for name in wanted:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"\n## {name.removeprefix('bench_')}")
        started = time.perf_counter()
        module.main()
        print(f"({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
