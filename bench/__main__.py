"""``python -m bench`` (``make bench``): run the benchmarks, write ``bench/RESULTS.md``.

Starts its own embedded stack (Tansu + redis-server, the product's settings)
in a fresh temporary directory, runs each scenario, writes the results, and
stops every process it started, by PID, whatever happens.

    python -m bench                      # every scenario, 3 rounds
    python -m bench --runs 5 pipeline_throughput
    python -m bench --quick              # 1/10 of the events: checks the bench itself
    python -m bench --profile always     # py-spy profile even when the targets are met

Experiments (a product change tried in a scratch copy, or other settings) run
beside the real pipeline in the same rounds, so their ratio is fair:

    python -m bench --experiment overlap=/tmp/exp-overlap \
                    --experiment fetch100=.,SILVERTINE_FETCH_WAIT_MS=100 \
                    -o variants=pipeline
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import BenchContext, Experiment, start_stack
from bench.report import ScenarioReport, machine_facts, write_results

SCENARIOS: dict[str, str] = {
    "pipeline_throughput": "bench.pipeline_throughput",
    # next (issue 3): codec, latency at fixed load, priority under flood, replay, scale
}
DEFAULT_OUTPUT = Path(__file__).with_name("RESULTS.md")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", default=[], metavar="SCENARIO",
                        help=f"default: all of {', '.join(SCENARIOS)}")
    parser.add_argument("--runs", type=int, default=3, help="rounds per variant (default 3)")
    parser.add_argument("--quick", action="store_true", help="1/10 of the events")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="py-spy profile of the worker: when a target is missed (auto)")
    parser.add_argument("--experiment", action="append", default=[], metavar="NAME=PATH[,K=V]",
                        help="also measure the worker from another source tree and/or with "
                        "other SILVERTINE_* settings (PATH . = this repo)")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                        help="scenario option, e.g. variants=pipeline,plain or events=100000")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep", action="store_true",
                        help="keep the whole work dir (Redis AOF included)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    try:
        args.experiments = [Experiment.parse(spec) for spec in args.experiment]
    except ValueError as exc:
        parser.error(str(exc))
    if any("=" not in option for option in args.option):
        parser.error("options are KEY=VALUE")
    args.options = dict(option.split("=", 1) for option in args.option)
    return args


async def _run_scenarios(ctx: BenchContext, names: list[str]) -> list[ScenarioReport]:
    reports = []
    for name in names:
        module = importlib.import_module(SCENARIOS[name])
        started = time.monotonic()
        reports.append(await module.run(ctx))
        ctx.say(f"[{name}] done in {time.monotonic() - started:.0f}s")
    return reports


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    names = args.scenarios or list(SCENARIOS)
    work_dir = Path(tempfile.mkdtemp(prefix="silvertine-bench-"))
    print(f"bench: work dir {work_dir}", flush=True)
    stack, settings, pids = start_stack(work_dir)
    try:
        facts = machine_facts({
            "embedded servers": "Tansu (memory storage) and redis-server (AOF, appendfsync "
                                f"always, on {_filesystem(work_dir)}), loopback",
        })
        facts.update(_server_versions(settings.redis_url, pids))
        ctx = BenchContext(settings=settings, work_dir=work_dir, runs=args.runs,
                           quick=args.quick, profile=args.profile, server_pids=pids,
                           say=lambda text: print(text, flush=True),
                           experiments=args.experiments, options=args.options)
        reports = asyncio.run(_run_scenarios(ctx, names))
    finally:
        stack.down()
        if not args.keep:
            shutil.rmtree(work_dir / "stack" / "redis", ignore_errors=True)
    facts["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    write_results(args.output, facts, reports, command.strip())
    print(f"bench: wrote {args.output} (logs and profiles in {work_dir})", flush=True)
    return 0


def _filesystem(path: Path) -> str:
    """The filesystem type holding ``path`` (the AOF's fsync cost depends on it)."""
    best, kind = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mount, fstype, *_ = line.split()
            if str(path.resolve()).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    except OSError:
        pass
    return kind


def _server_versions(redis_url: str | None, pids: dict[str, int]) -> dict[str, str]:
    import redis

    facts = {}
    try:
        client = redis.Redis.from_url(str(redis_url))
        info = client.info("server")
        client.close()
        facts["redis-server"] = str(info.get("redis_version"))
    except redis.RedisError:
        pass
    try:
        exe = Path(f"/proc/{pids['kafka']}/exe").resolve().name
        facts["broker"] = exe
    except (KeyError, OSError):
        pass
    return facts


if __name__ == "__main__":
    sys.exit(main())
