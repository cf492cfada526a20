"""``python -m bench`` (``make bench``): run the benchmarks, write ``bench/RESULTS.md``.

Starts a fresh embedded stack (Tansu + redis-server, the product's settings) for
each scenario in a temporary directory, runs the scenario, writes the results,
and stops every process it started, by PID, whatever happens.

    python -m bench                      # every scenario, 3 rounds (~10 min)
    python -m bench latency              # one scenario (RESULTS.md then holds only it)
    python -m bench --runs 5 pipeline_throughput
    python -m bench --quick              # 1/10 of the events: checks the bench itself
    python -m bench --profile always     # py-spy profile even when the targets are met
    python -m bench --tree /tmp/snap     # measure silvertine_streams from a snapshot
                                         # (e.g. `git archive HEAD silvertine_streams`)

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
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import REPO_ROOT, SOURCE_TREE, BenchContext, Experiment, start_stack
from bench.report import NOTES_TITLE, ScenarioReport, machine_facts, write_results
from silvertine_streams.settings import load_settings

SCENARIOS: dict[str, str] = {
    "codec": "bench.codec",
    "event_bus": "bench.event_bus",
    "pipeline_throughput": "bench.pipeline_throughput",
    "single": "bench.single",
    "latency": "bench.latency",
    "priority": "bench.priority",
    "replay": "bench.replay",
    "scale": "bench.scale",
}
"""Scenario modules: ``NAME``, ``TITLE``, ``async def run(ctx) -> ScenarioReport``, and
optionally ``STACK``: settings for the fresh stack the scenario gets (``None`` = it
needs no servers)."""
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
    parser.add_argument("--renote", type=Path, default=None, metavar="RESULTS_PICKLE",
                        help="run nothing: rewrite the output from a run's results.pickle "
                        "(in its work dir) with the current bench/notes/*.md")
    parser.add_argument("--tree", type=Path, default=None, metavar="PATH",
                        help="import silvertine_streams from PATH (a snapshot holding "
                        "silvertine_streams/) in the bench and every process it starts; "
                        "default: this repo. Results still go to --output")
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


def _run_scenario(args: argparse.Namespace, name: str, work_dir: Path,
                  facts: dict[str, str]) -> ScenarioReport:
    """Run one scenario on a stack of its own (started here, stopped here)."""
    module = importlib.import_module(SCENARIOS[name])
    overrides = getattr(module, "STACK", {})
    say = lambda text: print(text, flush=True)  # noqa: E731
    stack = None
    if overrides is None:
        settings = load_settings(data_dir=work_dir / name, metrics_port=0)
        pids: dict[str, int] = {}
    else:
        stack, settings, pids = start_stack(work_dir / name, **overrides)
    try:
        if stack is not None and "redis-server" not in facts:
            facts["embedded servers"] = (
                "Tansu (memory storage) and redis-server (AOF, appendfsync always, on "
                f"{_filesystem(work_dir)}), loopback; a fresh pair for each scenario")
            facts.update(_server_versions(settings.redis_url, pids))
        ctx = BenchContext(settings=settings, work_dir=work_dir, runs=args.runs,
                           quick=args.quick, profile=args.profile, server_pids=pids, say=say,
                           experiments=args.experiments, options=args.options)
        return asyncio.run(module.run(ctx))
    except Exception as exc:  # one broken scenario must not cost the others' results
        say(f"[{name}] FAILED: {exc!r}")
        return ScenarioReport(name=name, title=getattr(module, "TITLE", name),
                              description=f"**This scenario failed:** `{exc!r}`; see the "
                              f"bench's output and the logs under `{work_dir / name}`.",
                              rows=[])
    finally:
        if stack is not None:
            stack.down()
            if not args.keep:
                shutil.rmtree(work_dir / name / "stack" / "redis", ignore_errors=True)


def _reexec_in(tree: Path, argv: list[str], output: Path) -> None:
    """Run this command again with ``silvertine_streams`` imported from ``tree``.

    ``python -m`` puts its working directory first on ``sys.path``: run from
    ``tree``, with this repo on ``PYTHONPATH`` for ``bench`` itself.
    """
    tree = tree.resolve()
    if not (tree / "silvertine_streams").is_dir():
        sys.exit(f"--tree {tree}: no silvertine_streams/ there")
    env = dict(os.environ, BENCH_SOURCE_TREE=str(tree), PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p))
    os.chdir(tree)
    os.execve(sys.executable, [sys.executable, "-m", "bench", *argv, "--output",
                               str(output.resolve())], env)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.renote is not None:
        return _renote(args.renote, args.output)
    if args.tree is not None and args.tree.resolve() != SOURCE_TREE:
        _reexec_in(args.tree, list(argv if argv is not None else sys.argv[1:]), args.output)
    import silvertine_streams

    if not Path(silvertine_streams.__file__).resolve().is_relative_to(SOURCE_TREE):
        sys.exit(f"bench: silvertine_streams comes from {silvertine_streams.__file__}, "
                 f"not from {SOURCE_TREE}")
    names = args.scenarios or list(SCENARIOS)
    work_dir = Path(tempfile.mkdtemp(prefix="silvertine-bench-"))
    print(f"bench: work dir {work_dir}", flush=True)
    started = time.monotonic()
    facts = machine_facts()
    reports, durations = [], []
    for name in names:
        began = time.monotonic()
        reports.append(_run_scenario(args, name, work_dir, facts))
        durations.append(f"{name} {time.monotonic() - began:.0f}s")
        print(f"[{name}] done in {time.monotonic() - began:.0f}s", flush=True)
    facts["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    facts["wall time of this run"] = (f"{(time.monotonic() - started) / 60:.1f} min "
                                      f"({', '.join(durations)})")
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    write_results(args.output, facts, reports, command.strip())
    with open(work_dir / "results.pickle", "wb") as fh:
        pickle.dump((facts, reports, command.strip()), fh)
    print(f"bench: wrote {args.output} in {(time.monotonic() - started) / 60:.1f} min "
          f"(logs and profiles in {work_dir})", flush=True)
    return 0


def _renote(results: Path, output: Path) -> int:
    """Rewrite ``output`` from a finished run's results with today's hand-written notes.

    The notes (``bench/notes/<scenario>.md``) are written after reading a run's
    tables; this puts them beside those very tables without measuring again.
    """
    with open(results, "rb") as fh:
        facts, reports, command = pickle.load(fh)  # our own file, from this bench
    for report in reports:
        report.sections = [(title, text) for title, text in report.sections
                           if title != NOTES_TITLE]
        report.add_notes()
    write_results(output, facts, reports, command)
    print(f"bench: rewrote {output} from {results} with the current notes", flush=True)
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
