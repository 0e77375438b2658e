"""The `rivet` command. Parses arguments (click), loads config, calls the engine, renders, maps errors to exit codes.

Global options (-c/--config, --state, --json-errors, --lock-wait) work before and after the subcommand.
Human output goes to stderr; stdout carries only data (--json).

Imports are lazy: a command imports what it uses, inside its function, so `rivet --version` and `rivet --help` load
click and nothing heavy (no rich, pyarrow, duckdb, psycopg, textual or pydantic; docs/performance.md). Keep it so:
a module-level import here is paid by every `rivet` process.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import sys
import threading
import time
import traceback

import click

from engine.errors import ExitClass, RivetError, internal


@functools.cache
def stderr_console():
    """rich's stderr Console, made on first use (importing rich.console costs ~30 ms that --version need not pay)."""
    from rich.console import Console
    # Off a terminal (logs, cron, CI) lines must not wrap at 80 columns: one check, one error, one line.
    return Console(stderr=True, highlight=False, soft_wrap=True,
                   width=None if sys.stderr.isatty() or os.environ.get("COLUMNS") else 160)


class _LazyConsole:
    """`err_console.print(...)` without making the Console at import. Code that takes a Console object (progress,
    summaries) gets the real one from stderr_console(): a proxy forwards attribute reads, not writes or dunders."""

    def __getattr__(self, name):
        return getattr(stderr_console(), name)


err_console = _LazyConsole()

# Set by entry(): this process is the `rivet` command (not a test or a program that imports rivet_tui.cli).
_COMMAND_PROCESS = False


@contextlib.contextmanager
def loading():
    """Load a command's modules with Python's cycle collector paused, then freeze what they made.

    Importing the run path makes ~60,000 long-lived objects (modules, classes, functions, pydantic validators) and
    next to no garbage; with the collector on, Python walks them ~130 times while they load: 45-65 ms of a 0.6 s
    one-table run (docs/performance.md, "Start-up of a run"). gc.freeze() also keeps them out of every later full
    collection. Only in the `rivet` process: a frozen object is never collected, which a host program did not ask
    for. Blocks nest: the outermost one resumes the collector."""
    if not _COMMAND_PROCESS or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


GLOBALS = ("config_path", "state_path", "json_errors", "lock_wait")


def global_options(f):
    f = click.option("-c", "--config", "config_path", default=None, metavar="PATH",
                     help="config file (default ./rivet.toml)")(f)
    f = click.option("--state", "state_path", default=None, metavar="PATH",
                     help="state file (default .rivet/state.duckdb beside the config; env RIVET_STATE)")(f)
    f = click.option("--json-errors", "json_errors", is_flag=True, default=None,
                     help="errors as one JSON line on stderr")(f)
    f = click.option("--lock-wait", "lock_wait", type=float, default=None, metavar="SECONDS",
                     help="how long to wait for a state file held by another rivet (default 60)")(f)
    return f


def settings(ctx: click.Context, local: dict) -> dict:
    """Merge global options given after the subcommand over those given before it."""
    merged = dict(ctx.find_root().obj or {})
    for k in GLOBALS:
        if local.get(k) is not None:
            merged[k] = local[k]
    ctx.find_root().obj = merged
    return merged


def command(group, name=None, **kw):
    """A subcommand that takes the global options too and turns a RivetError into its exit code."""
    def wrap(f):
        @group.command(name, **kw)
        @global_options
        @click.pass_context
        @functools.wraps(f)
        def inner(ctx, config_path, state_path, json_errors, lock_wait, **kwargs):
            settings(ctx, dict(config_path=config_path, state_path=state_path, json_errors=json_errors,
                               lock_wait=lock_wait))
            return f(ctx, **kwargs)
        return inner
    return wrap


def opts(ctx) -> dict:
    return ctx.find_root().obj or {}


def load(ctx, params: tuple[str, ...] = ()):
    with loading():
        from engine.config import load_config
        o = opts(ctx)
        return load_config(o.get("config_path") or "rivet.toml", parse_params(params), state_path=o.get("state_path"))


def open_store(ctx, config):
    with loading():
        from engine.state import StateStore
        return StateStore(config.state_path, lock_wait_s=opts(ctx).get("lock_wait") or 60.0)


def parse_params(params) -> dict:
    out = {}
    for p in params:
        if "=" not in p:
            raise RivetError("RIVET_CLI_BAD_PARAM", f"--param {p!r} is not KEY=VALUE", "e.g. -p tenant=acme")
        k, v = p.split("=", 1)
        out[k.strip()] = v
    return out


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@global_options
@click.version_option(package_name="rivet-export")
@click.pass_context
def cli(ctx, config_path, state_path, json_errors, lock_wait):
    """Export database tables to Parquet/CSV and prove nothing was lost."""
    ctx.obj = {k: v for k, v in dict(config_path=config_path, state_path=state_path, json_errors=json_errors,
                                     lock_wait=lock_wait).items() if v is not None}
    if ctx.invoked_subcommand is None:
        ctx.invoke(tui_cmd)


def _open_tui(ctx, run_names=None, run_all=False, params=(), options=None, config=None, summary_output=None):
    try:
        with loading():
            from rivet_tui.app import run_app
    except ImportError:
        raise RivetError("RIVET_TUI_UNAVAILABLE", "the terminal UI is not available in this build",
                         "use `rivet run --no-tui`")
    config = config or load(ctx, params)
    return run_app(config, open_store(ctx, config), run_names=run_names, run_all=run_all, options=options,
                   summary_output=summary_output)


@command(cli, "tui")
def tui_cmd(ctx):
    """Open the terminal UI (no export starts until a key says so)."""
    return _open_tui(ctx)


@command(cli, "serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (loopback unless "
              "--allow-remote)")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--allow-remote", is_flag=True, help="allow a non-loopback --host (needs a token)")
@click.option("--token", default=None, envvar="RIVET_SERVE_TOKEN", metavar="TOKEN",
              help="access token the page needs (?token=...; env RIVET_SERVE_TOKEN)")
def serve_cmd(ctx, host, port, allow_remote, token):
    """Serve the terminal UI in a browser (textual-serve)."""
    from rivet_tui.serve import check_bind, serve
    check_bind(host, allow_remote, token)
    serve(opts(ctx).get("config_path"), opts(ctx).get("state_path"), host, port, token or None)


@command(cli, "run")
@click.option("-e", "--export", "names", multiple=True, help="export to run (repeatable; default all)")
@click.option("--no-tui", is_flag=True, help="headless: progress on stderr, summary after")
@click.option("--json", "as_json", is_flag=True, help="print one JSON summary object to stdout")
@click.option("--parallel-exports", type=click.IntRange(1, 64), default=None,
              help="exports run at once (default: [run] parallel_exports of the config, else 4)")
@click.option("--resume", is_flag=True, help="only resume an interrupted chunk run (exit 1 if there is none)")
@click.option("--force", is_flag=True, help="bypass refusals that --force may bypass")
@click.option("--strict", is_flag=True, help="refuse any column that is not delivered exactly")
@click.option("--validate", "do_validate", is_flag=True, help="validate the destination after the run")
@click.option("--reconcile", "do_reconcile", is_flag=True, help="validate and count the source after the run")
@click.option("-p", "--param", "params", multiple=True, metavar="K=V", help="fill ${K} in the config")
@click.option("--executor", "executor_type", type=click.Choice(["local", "dask"]), default=None,
              help="where chunk tasks run (overrides [executor] type)")
@click.option("--scheduler", default=None, metavar="ADDR", help="Dask scheduler, e.g. tcp://host:8786 (implies dask)")
@click.option("--summary-output", "summary_output", default=None, metavar="FILE",
              help="also write the run report's summary.json here (always in .rivet/runs/<session>/)")
def run_cmd(ctx, names, no_tui, as_json, parallel_exports, resume, force, strict, do_validate, do_reconcile, params,
            executor_type, scheduler, summary_output):
    """Run exports."""
    from datetime import datetime, timezone
    started = datetime.now(timezone.utc)
    with loading():
        from engine.run.runner import RunOptions, Runner, worst_exit
        from engine.sources import source_class
        config = load(ctx, params)
        source_class(config.source.type)   # the source's driver, imported now rather than in the first export
    if executor_type or scheduler:
        from dataclasses import replace
        from engine.config import ExecutorConfig
        kind = executor_type or "dask"
        config = replace(config, executor=ExecutorConfig(type=kind, address=scheduler or config.executor.address))
    selected = config.select(list(names))
    if any(e.destination.type == "stdout" for e in selected) and (len(selected) > 1 or as_json):
        raise RivetError("RIVET_CLI_STDOUT_ONE_EXPORT", "an export with destination type \"stdout\" must run alone "
                         "and without --json (its bytes are the only thing on stdout)",
                         "select it with -e NAME and drop --json")
    options = RunOptions(names=list(names), parallel_exports=parallel_exports, resume=resume, force=force,
                         strict=strict, lock_wait_s=opts(ctx).get("lock_wait") or 60.0)
    on_terminal = sys.stdin.isatty() and sys.stderr.isatty() and not os.environ.get("CI")
    if on_terminal and not no_tui and not as_json and not any(e.destination.type == "stdout" for e in selected):
        return _open_tui(ctx, run_names=list(names), run_all=not names, options=options, config=config,
                         summary_output=summary_output)
    store = open_store(ctx, config)
    with loading():
        from engine.run.executors import make_executor
        from rivet_tui.headless import HeadlessProgress, print_json, print_summary, save_run_report
    executor = make_executor(config, list(names))   # checked before any export starts (e.g. a local destination)
    json_errors = bool(opts(ctx).get("json_errors"))
    progress = HeadlessProgress(stderr_console(), json_errors=json_errors)
    runner = Runner(config, store, progress, options, executor)
    progress.start_line = (f"rivet run — {len(selected)} export(s), {min(runner.parallel_exports, len(selected))} "
                           f"at once; a status line every {progress.heartbeat_s:g}s")
    t0 = time.monotonic()
    try:
        with progress:
            results = runner.run()
    finally:
        executor.close()
    print_summary(stderr_console(), results, time.monotonic() - t0, json_errors=json_errors)
    code = worst_exit(results)
    extra = {}
    if (do_validate or do_reconcile) and code == ExitClass.OK:
        from engine.validate import validate
        reports = validate(config, store, [r.name for r in results if r.status == "succeeded"])
        extra["validation"] = [r.to_dict() for r in reports]
        code = max(code, render_validation(reports, as_json=False))
        if do_reconcile:
            from engine.reconcile import reconcile_many
            recs = reconcile_many(config, store, [r.name for r in results if r.status == "succeeded"])
            extra["reconcile"] = [r.to_dict() for r in recs]
            code = max(code, render_reconcile(recs))
    report = save_run_report(stderr_console(), config.state_path, results, started, code, summary_output)
    if report is not None:
        extra["report"] = str(report)
    if as_json:
        print_json({"status": "ok" if code == 0 else "failed", "exit_code": int(code),
                    "exports": [r.to_dict() for r in results], **extra})
    return code


@command(cli, "init")
@click.option("--source", "url", required=True, metavar="URL", help="postgresql://, mysql:// or mssql:// URL")
@click.option("--table", "tables", multiple=True, metavar="T", help="table to export (repeatable; default: all)")
@click.option("-o", "--output", default="rivet.toml", show_default=True, metavar="FILE")
def init_cmd(ctx, url, tables, output):
    """Introspect the source and write a commented starter config (never overwrites)."""
    from engine.init import init_config
    from engine.secrets import register
    from engine.urls import secrets_in
    for secret in secrets_in(url):   # a password in the URL given on the command line never reaches the output
        register(secret)
    path = init_config(url, list(tables), output)
    err_console.print(f"wrote {path}; next: `rivet doctor -c {path}` then `rivet run -c {path}`")


@command(cli, "doctor")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (ok, checks) to stdout")
def doctor_cmd(ctx, as_json):
    """Check the config, the state file, the source connection and every destination."""
    from rich.markup import escape

    from engine.doctor import run_checks
    failed = False
    checks = run_checks(opts(ctx))
    if as_json:
        from rivet_tui.headless import print_json
        print_json({"ok": all(c.ok for c in checks), "checks": [c.to_dict() for c in checks]})
    for check in checks:
        mark = "[green]ok  [/]" if check.ok else "[red]FAIL[/]"
        err_console.print(f"{mark} {check.name:<22} {escape(check.detail)}", highlight=False)
        if not check.ok:
            failed = True
            if check.hint:
                err_console.print(f"     hint: {check.hint}", markup=False, highlight=False)
    return ExitClass.USAGE if failed else ExitClass.OK


@command(cli, "plan")
@click.option("-e", "--export", "names", multiple=True)
@click.option("-o", "--output", "output", default=None, metavar="FILE", help="write the sealed plan artifact")
@click.option("--json", "as_json", is_flag=True, help="print the artifact (with its diff) to stdout")
@click.option("-p", "--param", "params", multiple=True, metavar="K=V")
def plan_cmd(ctx, names, output, as_json, params):
    """Build a sealed plan (no data read) and show its diff against the current state."""
    from engine.plans import build_plan, diff_plan
    from rivet_tui.headless import print_json, render_diff
    config = load(ctx, params)
    artifact = build_plan(config, open_store(ctx, config), list(names))
    if output:
        from pathlib import Path
        Path(output).write_text(json.dumps(artifact, indent=2) + "\n")
        err_console.print(f"plan {artifact['plan_id']} written to {output} (expires {artifact['expires_at']})")
    render_diff(stderr_console(), diff_plan(artifact))
    if as_json:
        print_json(artifact)


@command(cli, "apply")
@click.argument("plan_file", metavar="PLAN.json")
@click.option("--force", is_flag=True, help="apply a stale plan or one whose cursor moved")
@click.option("--json", "as_json", is_flag=True)
def apply_cmd(ctx, plan_file, force, as_json):
    """Execute a plan exactly as it was sealed."""
    from engine.plans import applied_runs, check_applicable, load_plan, plans_from_artifact
    from engine.run.runner import Runner, worst_exit
    from rivet_tui.headless import HeadlessProgress, print_json, print_summary, save_run_report
    artifact = load_plan(plan_file)
    config = load(ctx)
    store = open_store(ctx, config)
    done = applied_runs(artifact, store)
    if done and len(done) == len(artifact["exports"]):
        err_console.print(f"plan {artifact['plan_id']} already applied (runs {', '.join(done)}); nothing to do")
        if as_json:
            print_json({"status": "already_applied", "plan_id": artifact["plan_id"], "run_ids": done})
        return ExitClass.OK
    check_applicable(artifact, config, store, force)
    plans = [p for p in plans_from_artifact(artifact, config) if p.run_id not in done]
    from datetime import datetime, timezone
    t0, started = time.monotonic(), datetime.now(timezone.utc)
    json_errors = bool(opts(ctx).get("json_errors"))
    with HeadlessProgress(stderr_console(), json_errors=json_errors) as progress:
        with Runner(config, store, progress) as runner:
            results = runner.run_plans(plans)
    print_summary(stderr_console(), results, time.monotonic() - t0, json_errors=json_errors)
    code = worst_exit(results)
    report = save_run_report(stderr_console(), config.state_path, results, started, code)   # a run like any other
    if as_json:
        print_json({"status": "ok" if code == 0 else "failed", "plan_id": artifact["plan_id"], "exit_code": int(code),
                    "exports": [r.to_dict() for r in results], "report": str(report) if report else None})
    return code


@command(cli, "check")
@click.option("-e", "--export", "names", multiple=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--strict", is_flag=True, help="exit 1 if any column is not delivered exactly")
@click.option("-p", "--param", "params", multiple=True, metavar="K=V")
def check_cmd(ctx, names, as_json, strict, params):
    """Preflight per export: strategy, row estimate, chunk count, every column's type mapping."""
    from engine.check import check_exports
    from rivet_tui.headless import print_json
    config = load(ctx, params)
    reports = check_exports(config, open_store(ctx, config), list(names))
    notifications = config.notifications.describe() if config.notifications is not None else []
    if as_json:
        print_json({"exports": [r.to_dict() for r in reports], "notifications": notifications})
    for line in notifications:
        err_console.print(f"notifications: {line}", markup=False, highlight=False)
    code = ExitClass.OK
    for r in reports:
        err_console.print(f"[bold]{r.export}[/]  {r.strategy}  ~{r.rows_estimate if r.rows_estimate is not None else '?'}"
                          f" rows" + (f"  {r.chunks} {r.chunk_unit}" if r.chunks is not None else "")
                          + (f"  [red]error[{r.error['code']}][/]: {r.error['error']}" if r.error else ""),
                          highlight=False)
        for line in r.guardrails + r.layout:
            err_console.print(f"  {line}", markup=False, highlight=False)
        if r.columns:
            _table(["column", "source type", "output type", "fidelity", "note"],
                   [[c["name"], c["native_type"], c["arrow_type"], c["fidelity"], c["note"]] for c in r.columns])
        if r.error:
            code = max(code, ExitClass(r.error["exit_class"]))
        if strict and any(c["fidelity"] != "exact" for c in r.columns):
            code = max(code, ExitClass.USAGE)
    return code


@command(cli, "repair")
@click.option("-e", "--export", "name", required=True)
@click.option("--report", "report_file", default=None, metavar="FILE", help="a saved `rivet reconcile -o` report")
@click.option("--execute", is_flag=True, help="re-export the mismatched chunks (default: dry run)")
@click.option("--json", "as_json", is_flag=True)
def repair_cmd(ctx, name, report_file, execute, as_json):
    """Re-export only the chunks a reconcile found mismatched (dry run unless --execute)."""
    from engine.repair import repair
    from rivet_tui.format import shown
    from rivet_tui.headless import print_json
    config = load(ctx)
    result = repair(config, config.export(name), open_store(ctx, config), report_file=report_file, execute=execute,
                    lock_wait_s=opts(ctx).get("lock_wait") or 60.0)
    if as_json:
        print_json(result.to_dict())
    if not result.chunks:
        err_console.print(f"{name}: nothing to repair (no mismatched chunks in run {result.run_id})")
        return ExitClass.OK
    verb = "re-exported" if result.executed else "would re-export"
    for c in result.chunks:
        err_console.print(f"{verb} chunk {c['index']} \\[{shown(c['lo'])} .. {shown(c['hi'])}]: source {c['source_rows']}, "
                          f"recorded {c['recorded_rows']}", highlight=False)
    if result.executed:
        err_console.print(f"{len(result.new_parts)} new part(s), {result.rows_written:,} rows; "
                          f"{len(result.superseded)} part(s) marked superseded. Run `rivet reconcile -e {name}`.")
    else:
        err_console.print("dry run: add --execute to re-export these chunks")
    return ExitClass.OK


@command(cli, "validate")
@click.option("-e", "--export", "names", multiple=True)
@click.option("--json", "as_json", is_flag=True)
def validate_cmd(ctx, names, as_json):
    """Re-check the destination against the manifests: _SUCCESS hash, every part's size, hash and rows."""
    from engine.validate import validate
    config = load(ctx)
    reports = validate(config, open_store(ctx, config), list(names))
    return render_validation(reports, as_json)


def render_validation(reports, as_json: bool) -> ExitClass:
    from rich.markup import escape

    from rivet_tui.headless import print_json
    ok = all(r.ok for r in reports)
    if as_json:
        print_json({"ok": ok, "reports": [r.to_dict() for r in reports]})
    for r in reports:
        mark = "[green]ok  [/]" if r.ok else "[red]FAIL[/]"
        err_console.print(f"{mark} {r.export:<20} {r.uri}  {r.parts_checked} parts, {r.rows:,} rows", highlight=False)
        for f in r.failures:
            err_console.print(f"     [red]✗[/] {escape(f.object)}: {escape(f.problem)}", highlight=False)
        for f in r.warnings:
            err_console.print(f"     [yellow]![/] {escape(f.object)}: {escape(f.problem)}", highlight=False)
    return ExitClass.OK if ok else ExitClass.INTEGRITY


@command(cli, "reconcile")
@click.option("-e", "--export", "names", multiple=True, required=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("-o", "--output", "output", default=None, metavar="FILE", help="also save the report (for repair)")
def reconcile_cmd(ctx, names, as_json, output):
    """Count the source per chunk window and compare with what was recorded; a clean report advances verified."""
    from engine.reconcile import reconcile_many
    from rivet_tui.headless import print_json
    config = load(ctx)
    reports = reconcile_many(config, open_store(ctx, config), list(names))
    if output:
        import json as _json
        from pathlib import Path
        Path(output).write_text(_json.dumps({"reports": [r.to_dict() for r in reports]}, indent=2))
    if as_json:
        print_json({"ok": all(r.ok for r in reports), "reports": [r.to_dict() for r in reports]})
    return render_reconcile(reports)


def render_reconcile(reports) -> ExitClass:
    from rivet_tui.format import shown
    worst = ExitClass.OK
    for r in reports:
        s = r.summary
        mark = "[green]ok  [/]" if r.ok else "[red]FAIL[/]"
        err_console.print(f"{mark} {r.export:<20} {r.strategy:<11} run {r.run_id or '-'}: {s['match']} match, "
                          f"{s['mismatch']} mismatch, {s['unknown']} unknown"
                          + ("  → verified boundary written" if r.verified_written else ""), highlight=False)
        for c in r.checks:
            if c.status != "match":
                where = f"chunk {c.index} [{shown(c.lo)} .. {shown(c.hi)}]" if c.index is not None else "whole export"
                err_console.print(f"     {c.status:<8} {where}: source {c.source_rows}, recorded {c.recorded_rows}"
                                  + (f" ({c.note})" if c.note else ""), markup=False, highlight=False)
        if any(c.status == "mismatch" for c in r.checks):
            worst = ExitClass.INTEGRITY
    return worst


# ---- state ---------------------------------------------------------------------------------------------------
@cli.group("state")
def state_group():
    """Read and repair state."""


def _table(columns: list[str], rows: list[list], title: str | None = None) -> None:
    from rich.table import Table
    t = Table(*columns, title=title, title_justify="left", show_edge=False, box=None, pad_edge=False)
    for r in rows:
        t.add_row(*["-" if v is None else str(v) for v in r])
    err_console.print(t)


def _emit(rows: list[dict], columns: list[str], as_json: bool, empty: str, key: str) -> None:
    if as_json:   # rivet_tui.headless imports the runner (pyarrow and all: ~0.13 s); a table needs none of it
        from rivet_tui.headless import print_json
        print_json({key: rows})
    elif not rows:
        err_console.print(empty)
    else:
        _table(columns, [[r.get(c) for c in columns] for r in rows])


@command(state_group, "files")
@click.option("-e", "--export", "name", default=None)
@click.option("--json", "as_json", is_flag=True)
def state_files(ctx, name, as_json):
    """Files written (the file log)."""
    config = load(ctx)
    if name:
        config.export(name)
    rows = open_store(ctx, config).files(name)
    _emit(rows, ["export_name", "run_id", "path", "rows", "size_bytes", "chunk_index", "status", "created_at"],
          as_json, "No files recorded yet.", "files")


@command(state_group, "show")
@click.option("-e", "--export", "name", default=None)
@click.option("--json", "as_json", is_flag=True)
def state_show(ctx, name, as_json):
    """Cursor, last run and files per export."""
    config = load(ctx)
    if name:
        config.export(name)
    rows = open_store(ctx, config).summary(name)
    _emit(rows, ["export_name", "cursor_column", "cursor", "last_run_id", "last_status", "last_run_at", "files",
                 "rows"], as_json, "No state recorded yet.", "exports")


@command(state_group, "chunks")
@click.option("-e", "--export", "name", required=True)
@click.option("--json", "as_json", is_flag=True)
def state_chunks(ctx, name, as_json):
    """Chunk tasks of the export's latest chunk run."""
    config = load(ctx)
    config.export(name)
    store = open_store(ctx, config)
    run = store.latest_chunk_run(name)
    tasks = store.chunk_tasks(run["run_id"]) if run else []
    if as_json:
        from rivet_tui.headless import print_json
        print_json({"chunk_run": run, "tasks": tasks})
        return
    if not run:
        err_console.print(f"No chunk runs recorded for {name}.")
        return
    err_console.print(f"chunk run {run['run_id']} ({run['status']}), column {run.get('chunk_column')}")
    _table(["chunk_index", "lo", "hi", "status", "attempts", "rows_written", "error"],
           [[t.get(c) for c in ("chunk_index", "lo", "hi", "status", "attempts", "rows_written", "error")]
            for t in tasks])


def progression_lines(rows: list[dict]) -> list[str]:
    """The progression table (docs/architecture.md), column for column."""
    def at(v):
        if not v:
            return "-"
        from datetime import datetime, timezone
        dt = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
        if dt.tzinfo:
            dt = dt.astimezone(timezone.utc)
        return dt.strftime("%Y-%m-%d %H:%M:%S UTC")

    def boundary(strategy, cursor, chunk):
        if strategy == "chunked" and chunk is not None:
            return f"chunk #{chunk}"
        return cursor if cursor is not None else "-"

    fmt = "{:<14} {:<14} {:<28} {:<24} {:<14} {}"
    lines = [fmt.format("EXPORT", "COMMITTED MODE", "COMMITTED", "COMMITTED AT", "VERIFIED MODE", "VERIFIED")]
    for r in rows:
        lines.append(fmt.format(
            r["export_name"], r.get("last_committed_strategy") or "-",
            boundary(r.get("last_committed_strategy"), r.get("last_committed_cursor"), r.get("last_committed_chunk_index")),
            at(r.get("last_committed_at")), r.get("last_verified_strategy") or "-",
            boundary(r.get("last_verified_strategy"), r.get("last_verified_cursor"), r.get("last_verified_chunk_index"))))
    return lines


@command(state_group, "progression")
@click.option("-e", "--export", "name", default=None)
@click.option("--json", "as_json", is_flag=True)
def state_progression(ctx, name, as_json):
    """Committed and verified boundaries (docs/architecture.md, "Progression")."""
    config = load(ctx)
    if name:
        config.export(name)
    rows = open_store(ctx, config).progression(name)
    if as_json:
        from rivet_tui.headless import print_json
        print_json({"progression": rows})
    elif not rows:
        err_console.print("No progression boundaries recorded yet.")
    else:
        for line in progression_lines(rows):
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)


def _state_change(ctx, name, as_json, action: str, done: str, nothing: str):
    config = load(ctx)
    config.export(name)
    changed = getattr(open_store(ctx, config), action)(name)
    if as_json:
        from rivet_tui.headless import print_json
        print_json({"export": name, "action": action, "changed": bool(changed)})
    else:
        err_console.print(done if changed else nothing)


@command(state_group, "reset")
@click.option("-e", "--export", "name", required=True)
@click.option("--json", "as_json", is_flag=True)
def state_reset(ctx, name, as_json):
    """Forget the export's cursor (the next incremental run reads everything)."""
    _state_change(ctx, name, as_json, "reset_state", f"{name}: cursor forgotten; the next run exports everything",
                  f"{name}: no cursor stored")


@command(state_group, "accept")
@click.option("-e", "--export", "name", required=True)
@click.option("--json", "as_json", is_flag=True)
def state_accept(ctx, name, as_json):
    """Keep the stored cursor for the export's current cursor column / relation."""
    from engine.planner import accept_cursor_identity
    config = load(ctx)
    exp = config.export(name)
    changed = accept_cursor_identity(exp, open_store(ctx, config))
    if as_json:
        from rivet_tui.headless import print_json
        print_json({"export": name, "action": "accept", "changed": changed})
    else:
        err_console.print(f"{name}: the stored cursor now belongs to {exp.cursor_column!r}" if changed
                          else f"{name}: no cursor stored; nothing to accept")


@command(state_group, "reset-progression")
@click.option("-e", "--export", "name", required=True)
@click.option("--json", "as_json", is_flag=True)
def state_reset_progression(ctx, name, as_json):
    """Drop the committed and verified boundaries of an export."""
    _state_change(ctx, name, as_json, "reset_progression", f"{name}: progression boundaries cleared",
                  f"{name}: no progression recorded")


@command(cli, "metrics")
@click.option("-e", "--export", "name", default=None)
@click.option("--last", type=click.IntRange(1), default=None)
@click.option("--json", "as_json", is_flag=True)
def metrics_cmd(ctx, name, last, as_json):
    """Run history."""
    config = load(ctx)
    if name:
        config.export(name)
    rows = open_store(ctx, config).metrics(name, last)
    _emit(rows, ["export_name", "run_id", "mode", "status", "rows", "files", "bytes", "duration_ms", "retries",
                 "started_at", "error_code"], as_json, "No runs recorded yet.", "runs")


@cli.group("warm")
def warm_group():
    """A resident process that forks each command, already loaded (docs/warm.md)."""


@command(warm_group, "start")
@click.option("--idle-timeout", "idle_s", type=click.FloatRange(min=1), default=900, show_default=True,
              metavar="SECONDS", help="exit after this long without a command")
@click.option("--json", "as_json", is_flag=True)
def warm_start(ctx, idle_s, as_json):
    """Start the warm server for this rivet (no-op if one answers)."""
    from rivet_tui import warm
    status = warm.start(idle_s)
    if as_json:
        print(json.dumps(status))
    else:
        err_console.print(f"warm server {'already running' if status['already_running'] else 'started'}: "
                          f"pid {status['pid']}, {status['socket']}")


@command(warm_group, "status")
@click.option("--json", "as_json", is_flag=True)
def warm_status(ctx, as_json):
    """Whether a warm server serves this rivet (exit 1 if none)."""
    from rivet_tui import warm
    status = warm.request("status")
    if as_json:
        print(json.dumps(status))
    elif status is None:
        err_console.print(f"no warm server for this rivet (socket {warm.socket_path()})")
    else:
        err_console.print(f"warm server pid {status['pid']}: {status['served']} command(s) served, "
                          f"{status['running']} running, idle timeout {status['idle_timeout_s']:g} s, "
                          f"{status['socket']}")
    return ExitClass.OK if status is not None else ExitClass.USAGE


@command(warm_group, "stop")
def warm_stop(ctx):
    """Stop the warm server: it takes no new command and exits once the running ones end."""
    from rivet_tui import warm
    answer = warm.request("stop")
    err_console.print("no warm server for this rivet" if answer is None else
                      f"warm server stopping ({answer['running']} command(s) still running)")


def main(argv=None) -> None:
    json_errors = "--json-errors" in (argv if argv is not None else sys.argv[1:])
    try:
        rv = cli.main(args=argv, prog_name="rivet", standalone_mode=False)
        code = int(rv) if isinstance(rv, int) else 0
    except RivetError as e:
        code = _report(e, json_errors)
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.exceptions.Abort:
        err_console.print("aborted")
        code = ExitClass.TRANSIENT
    except click.ClickException as e:
        code = _report(RivetError("RIVET_CLI_USAGE", e.format_message(), "see `rivet --help`"), json_errors)
    except KeyboardInterrupt:
        err_console.print("interrupted; state is consistent, the next run resumes")
        code = 130
    except Exception as e:  # a bug
        if os.environ.get("RIVET_DEBUG"):
            traceback.print_exc()
        code = _report(internal(e), json_errors)
    sys.exit(int(code))


def entry() -> None:
    """The `rivet` command: main(), then a quick exit. By the time main returns, every command has closed, flushed
    and fsynced what it wrote; tearing the interpreter down (every module, the DuckDB instance, Arrow's pools)
    would add ≈ 0.1 s to each process for nothing (measured: 1.02 vs 1.15 s for one small export). atexit
    handlers still run. Only when no other non-daemon thread is alive: otherwise the normal exit waits for it."""
    global _COMMAND_PROCESS
    _COMMAND_PROCESS = True
    from rivet_tui.warm import arrow_allocator, exit_now
    arrow_allocator()
    try:
        main()
    except SystemExit as e:
        if any(t.is_alive() and not t.daemon and t is not threading.main_thread() for t in threading.enumerate()):
            raise
        exit_now(e.code)


def _report(e: RivetError, json_errors: bool) -> int:
    from engine.secrets import redact
    e.message = redact(e.message)
    if json_errors:
        sys.stderr.write(e.to_json() + "\n")
    else:
        err_console.print(e.render(), markup=False, highlight=False)
    return int(e.exit_class)


if __name__ == "__main__":
    entry()
