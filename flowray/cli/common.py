"""What the commands share: error messages and exit codes, option parsing, formatting.

Exit codes: 0 every job succeeded or was skipped; 1 a job failed; 2 an invalid flow or bad
arguments; 130 interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import click

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130



def _stderr_color() -> bool:
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def _fail(message: str, code: int = EXIT_INVALID) -> None:
    click.echo(click.style("error: ", fg="red", bold=True) + message
               if _stderr_color() else f"error: {message}", err=True)
    sys.exit(code)


def _pairs(values: Sequence[str], what: str, sep: str = "=") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, found, value = item.partition(sep)
        if not found or not key.strip():
            _fail(f"{what} '{item}' is not {('KEY' + sep + 'VALUE')}")
        out[key.strip()] = value
    return out


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "$": "$"}


# The most a --secret-file, --env-file or --event file may hold: read whole into memory, so a
# mistaken path (/dev/zero, a dataset) must not exhaust it.
MAX_VALUES_FILE_BYTES = 16 << 20


def read_values_file(path: str, what: str) -> str:
    """The text of a --secret-file, --env-file or --event file, at most
    :data:`MAX_VALUES_FILE_BYTES`; exits with a clear error otherwise."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(MAX_VALUES_FILE_BYTES + 1)
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{what} '{path}': {getattr(exc, 'strerror', None) or exc}")
        raise AssertionError from exc
    if len(text) > MAX_VALUES_FILE_BYTES:
        _fail(f"{what} '{path}' is larger than {MAX_VALUES_FILE_BYTES >> 20} MiB "
              "(is it the right file?)")
    return text


def read_env_file(path: str, what: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as dotenv files have them: ``#`` comments, blank lines and an
    ``export`` prefix allowed; a value in single quotes is literal, one in double quotes knows
    the escapes ``\\n \\r \\t \\\\ \\" \\$``; either kind of quotes may span lines (a PEM
    key, a JSON service-account file)."""
    lines = read_values_file(path, what).splitlines()
    out: dict[str, str] = {}
    n = 0
    while n < len(lines):
        line = lines[n]
        n += 1
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        text = text.removeprefix("export ").strip()
        key, found, value = text.partition("=")
        key = key.strip()
        if not found or not key:
            # never echo the line: it may hold a secret
            _fail(f"{path}:{n}: {what} line is not KEY=VALUE")
        value = value.strip()
        if value[:1] in ("'", '"') and (len(value) == 1 or value[0] not in value[1:]):
            # an opening quote closed on a later line: a multi-line value
            quote, first = value[0], n
            body = value[1:]
            while not _closes(body, quote):
                if n >= len(lines):
                    _fail(f"{path}:{first}: {what}: the value of {key} opens a {quote} quote "
                          "that is never closed")
                body += "\n" + lines[n]
                n += 1
            body = body.rstrip()[:-1]
            value = body if quote == "'" else _unescape(body)
        elif len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1] if value[0] == "'" else _unescape(value[1:-1])
        out[key] = value
    return out


def _closes(body: str, quote: str) -> bool:
    """Whether ``body`` (after an opening quote) ends with its closing quote."""
    body = body.rstrip()
    if not body.endswith(quote):
        return False
    if quote == "'":
        return True
    backslashes = len(body) - 1 - len(body[:-1].rstrip("\\"))
    return backslashes % 2 == 0


def _unescape(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body) and body[i + 1] in _ESCAPES:
            out.append(_ESCAPES[body[i + 1]])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _read_submit_bundle(path: str) -> dict[str, Any]:
    """The secrets, env and event that `flowray submit` shipped; the file is deleted once
    read, so that the values do not stay on the cluster's disk."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        _fail(f"--submit-bundle '{path}': {exc}")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    if not isinstance(data, dict):
        _fail(f"--submit-bundle '{path}' is not a JSON object")
    return dict(data)


def _print_diagnostics(exc: Exception) -> None:
    diagnostics = getattr(exc, "diagnostics", None)
    color = _stderr_color()
    if diagnostics:
        for d in diagnostics:
            click.echo(d.format(color=color), err=True)
    else:
        click.echo(str(exc), err=True)


def _lazy_pinner(workspace: str, offline: bool | None, flow: str | None = None) -> Any:
    """The runtime's lazily made ActionPinner, its messages on stderr and a configuration that
    cannot be read an error (exit 2)."""
    from flowray.runtime.api import lazy_pinner
    from flowray.runtime.errors import StartError

    get = lazy_pinner(workspace, offline, flow, lambda line: click.echo(line, err=True))

    def checked() -> Any:
        try:
            return get()
        except StartError as exc:
            _fail(str(exc))

    return checked


def _actions_config(workspace: str, offline: bool | None = None) -> Any:
    from flowray.actions import ActionError, load_config

    try:
        return load_config(workspace, offline=offline)
    except ActionError as exc:
        _fail(str(exc))


def _out_width() -> int | None:
    """How wide stdout's lines may be: ``COLUMNS`` when set, else the terminal's width when
    stdout is a terminal; None (no limit) when it goes to a file or a pipe, so that what a
    script reads is never cut."""
    import shutil

    if os.environ.get("COLUMNS", "").strip().isdigit() or sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = (),
           optional: Sequence[int] = (), width: int | None = None) -> list[str]:
    """Rows as columns two spaces apart (those in ``right`` right-aligned), the header first.
    Where ``width`` is given and the table is wider, the ``optional`` columns are left out
    (in that order) until it fits, and then the last column is cut to fit, ending in '...'."""
    keep = list(range(len(header)))
    table = [list(header), *(list(r) for r in rows)]

    def widths() -> dict[int, int]:
        return {i: max(len(r[i]) for r in table) for i in keep}

    def total() -> int:
        w = widths()
        return sum(w[i] for i in keep[:-1]) + 2 * (len(keep) - 1) + w[keep[-1]]

    for i in optional:
        if width is None or total() <= width:
            break
        keep.remove(i)
    w = widths()
    lines = []
    for r in table:
        cells = [r[i].rjust(w[i]) if i in right else r[i].ljust(w[i]) for i in keep[:-1]]
        last = r[keep[-1]]
        line = "  ".join([*cells, last.rjust(w[keep[-1]]) if keep[-1] in right else last])
        if width is not None and len(line) > width:
            line = line[: max(width - 3, 0)] + "..."
        lines.append(line)
    return lines


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _fmt_time(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _fmt_dur(start: float | None, end: float | None) -> str:
    if not start or not end:
        return "-"
    return f"{end - start:.2f}s"


def _jobs_api(address: str) -> Any:
    """The Jobs API of the cluster whose dashboard is at ``address`` (exit 2 if it fails)."""
    from flowray.backends.jobs_api import JobsApi, JobsApiError

    try:
        return JobsApi.connect(address)
    except JobsApiError as exc:
        _fail(str(exc), exc.code)


def _remote(address: str) -> Any:
    from flowray.backends.jobs_api import JobsApiError, check_address

    try:
        return _jobs_api(check_address(address, "--address"))
    except JobsApiError as exc:
        _fail(str(exc), exc.code)


@contextlib.contextmanager
def _jobs_errors() -> Iterator[None]:
    """A Jobs API error becomes its message and exit code."""
    from flowray.backends.jobs_api import JobsApiError

    try:
        yield
    except JobsApiError as exc:
        _fail(str(exc), exc.code)


def require_extra(what: str, extra: str, modules: Sequence[str]) -> None:
    """Exit 2 with how to install them when ``modules`` (of the package's ``extra``) are not
    installed, rather than a traceback."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        _fail(f"{what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
              f"not installed here: pip install 'flowray[{extra}]'")
