"""Scenario: replay the canonical log at `--speed max` (events/s), vs raw XRANGE paging.

`log:market_data` is filled once with N quotes through the product's own sink
(`CanonicalLogSink.write`, the entries a worker writes). Then, in a child
process each (`bench/replay_client.py`), interleaved round by round:

* **replay**: `silvertine_streams.replay.replay(redis, ["market_data"],
  speed="max", to=<no-op sink>)`: pages of 5,000 via XRANGE, one msgspec
  decode per page, `metadata.replay` marking, one sink call per event;
* **read_pages**: the replay's reader alone (XRANGE + decode, no delivery);
* **raw XRANGE** (the baseline): the same paging with the replies left
  undecoded — what reading the stream costs before any event exists.

The child times itself from its first read to its last event; CPU columns are
that child's and redis-server's CPU per event.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time

from bench.harness import SOURCE_TREE, BenchContext, BenchError, Child, child_env, run_dir
from bench.load import QuoteFeed
from bench.measure import reset_redis
from bench.profiling import Profile, Sampler
from bench.report import Metric, Ratio, Row, Run, ScenarioReport, Target
from silvertine_streams.events import content_fingerprint, encode_event
from silvertine_streams.sinks.canonical_log import CanonicalLogSink, LogRecord

NAME = "replay"
TITLE = "Replay: `--speed max` from the log (events/s)"
STACK: dict[str, object] = {}

EVENTS = 100_000
TARGET_RATE = 200_000.0
VARIANTS = {
    "replay": "replay(speed=\"max\") → no-op sink",
    "pages": "read_pages (XRANGE + msgspec decode, no delivery)",
    "xrange": "raw XRANGE paging, undecoded (baseline)",
}
FALLBACK = {  # when silvertine_streams.replay is not in the tree under test
    "decode": "XRANGE paging + msgspec decode (bench code: no replay API in this tree)",
    "xrange": VARIANTS["xrange"],
}


async def _fill(ctx: BenchContext, events: int) -> None:
    """Write ``events`` quotes to ``log:market_data`` through the product's sink."""
    await reset_redis(ctx)
    redis = ctx.redis()
    sink = CanonicalLogSink(redis, "market_data", window_s=ctx.settings.dedupe_window_s,
                            retry_max_s=ctx.settings.sink_retry_max_s)
    feed = QuoteFeed("replay-feed")
    try:
        while feed.sent < events:
            batch = feed.next(min(5_000, events - feed.sent))
            await sink.write([LogRecord(e.event_id, content_fingerprint(e), encode_event(e),
                                        f"silvertine.market_data/0/{feed.sent}#{i}")
                              for i, e in enumerate(batch)])
        if int(await redis.xlen("log:market_data")) != events:
            raise BenchError("the log does not hold the events written")
    finally:
        await redis.aclose()


async def _measure(ctx: BenchContext, variant: str, label: str, env: dict[str, str],
                   profile_to: str | None = None) -> Run:
    directory = run_dir(ctx, NAME, label)
    variables = child_env(ctx.settings, SOURCE_TREE, BENCH_REDIS_URL=str(ctx.settings.redis_url),
                          **env, **({"BENCH_START_DELAY_S": "1"} if profile_to else {}))
    child = Child.python_module(f"replay {label}", "bench.replay_client", variables,
                                directory / "process.log", variant)
    servers0 = ctx.server_cpu()
    child.start()
    sampler = Sampler(child.pid, ctx.work_dir / NAME / profile_to).start() if profile_to \
        else None
    try:
        code = await _wait(child)
    finally:
        if sampler is not None:
            sampler.stop()
        child.stop()
    servers1 = ctx.server_cpu()
    lines = [line for line in child.log_path.read_text().splitlines() if line.startswith("{")]
    if code != 0 or not lines:
        raise BenchError(f"{child.name} exited with {code}:\n{child.log_tail()}")
    result = json.loads(lines[-1])
    redis0, redis1 = servers0.get("redis"), servers1.get("redis")
    run = Run(events=result["events"], seconds=result["seconds"], cpu_s={
        "client": result["cpu_s"],
        "redis": None if redis0 is None or redis1 is None else redis1 - redis0})
    run.extra["hiredis"] = result["hiredis"]
    return run


async def _wait(child: Child, timeout_s: float = 300.0) -> int:
    import asyncio

    deadline = time.monotonic() + timeout_s
    assert child.process is not None
    while child.process.poll() is None:
        if time.monotonic() > deadline:
            raise BenchError(f"{child.name} still running after {timeout_s:g}s")
        await asyncio.sleep(0.05)
    return child.process.returncode


async def run(ctx: BenchContext) -> ScenarioReport:
    """Options: ``events`` (log size, default 100,000)."""
    events = int(ctx.options.get("events", EVENTS // (5 if ctx.quick else 1)))
    ctx.say(f"[{NAME}] writing {events:,} events to log:market_data through the sink")
    await _fill(ctx, events)
    has_api = importlib.util.find_spec("silvertine_streams.replay") is not None
    variants = VARIANTS if has_api else FALLBACK
    subject = "replay" if has_api else "decode"
    rows = {key: Row(key, label) for key, label in variants.items()}
    envs: dict[str, tuple[str, dict[str, str]]] = {key: (key, {}) for key in variants}
    for experiment in ctx.experiments:  # e.g. hiredis=.,PYTHONPATH=/tmp/hiredis:/work/main
        key = f"exp:{experiment.name}"
        rows[key] = Row(key, f"experiment **{experiment.name}**: replay with "
                        + ", ".join(f"{k}={v}" for k, v in experiment.env))
        envs[key] = (subject, dict(experiment.env))
    for round_no in range(1, ctx.runs + 1):
        for key, (variant, env) in envs.items():
            result = await _measure(ctx, variant, f"{key.replace(':', '-')}-r{round_no}", env)
            if result.events != events:
                raise BenchError(f"{key} read {result.events:,} of {events:,} events")
            rows[key].runs.append(result)
            ctx.say(f"[{NAME}] round {round_no} {key:8s} {result.rate:>10,.0f} events/s "
                    f"(client CPU {result.cpu_us_per_event('client') or math.nan:.2f} µs/event, "
                    f"hiredis {result.extra['hiredis']})")
    hiredis = rows[subject].runs[0].extra.get("hiredis") if rows[subject].runs else None
    report = ScenarioReport(
        name=NAME, title=TITLE,
        description=(__doc__ or "").split("\n\n", 1)[1].strip()
        + f"\n\nThis run: {events:,} entries, {ctx.runs} rounds; redis-py's C reply parser "
        f"`hiredis` {'**is**' if hiredis else '**is not**'} installed."
        + ("" if has_api else " **`silvertine_streams.replay` is not in the tree under test**: "
           "the bench's own XRANGE + msgspec decode stands in for it."),
        rows=list(rows.values()), cpu_processes=("client", "redis"),
        metrics=[Metric("rate", "events/s", 0)],
        unit_note="Ratios: replay / baseline (<1× = slower than the baseline).",
    )
    report.ratios.append(Ratio(f"{subject} / raw XRANGE", subject, "xrange"))
    if has_api:
        report.ratios += [Ratio("read_pages / raw XRANGE", "pages", "xrange"),
                          Ratio("replay / read_pages", "replay", "pages")]
    for key in rows:
        if key.startswith("exp:"):
            report.ratios.append(Ratio(f"{key} / {subject}", key, subject))
    rate = rows[subject].median
    report.targets.append(Target(f"replay ≥ {TARGET_RATE:,.0f} events/s", rate >= TARGET_RATE,
                                 f"{rate:,.0f} events/s (median)"))
    if ctx.profile == "always" or (ctx.profile == "auto" and rate < TARGET_RATE):
        ctx.say(f"[{NAME}] profiling one more replay run (py-spy)")
        name = "replay-profile.txt"
        result = await _measure(ctx, subject, "replay-profile", {}, profile_to=name)
        cpu = result.cpu_us_per_event("client")
        report.sections.append(("Profile of the replay client (py-spy)", (
            f"One extra replay run with py-spy attached: {result.rate:,.0f} events/s, client "
            f"CPU {cpu or math.nan:.2f} µs/event. Folded stacks: "
            f"`{ctx.work_dir / NAME / name}`.\n\n"
            + Profile.load(ctx.work_dir / NAME / name).markdown(top=15, cpu_us_per_event=cpu))))
    report.add_notes()
    return report
