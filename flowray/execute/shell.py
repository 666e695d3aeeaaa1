"""Turning a ``run:`` script with ``${{ }}`` templates into a command, without shell injection.

Templates that read only trusted contexts (those written by the flow's author: ``matrix``,
``variables``, ``flow``, ``job``, ``run``, ``runner``) are spliced in as text, so
``run: ${{ matrix.cmd }}`` runs a command from the matrix. Templates that read anything else
(``inputs``, ``event``, step and job outputs, ``secrets``, and ``env``, whose values may come
from any of those) are never spliced into the script: each value is put in an environment
variable ``FLOWRAY_EXPR_<n>`` and the template is replaced by a reference to it, quoted to fit
where it stands (unquoted, in double quotes, in single quotes, or in a here-document), so the
value is data, never code. Shells that are not POSIX shells (``python``, custom commands) have
no such quoting: there, a template reading untrusted data is refused.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from typing import Any

from flowray import expr
from flowray.spec.shells import is_posix_shell, is_trusted

_NONE, _SINGLE, _DOUBLE, _ANSI = 0, 1, 2, 3
_HEREDOC = re.compile(r"<<(-?)[ \t]*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")


class ShellTemplateError(ValueError):
    pass


def _quote_states(script: str) -> list[int]:
    """The quoting state before each character: 0 none, 1 '...', 2 "...", 3 $'...'.

    Here-document bodies are reported as 4 (expanding) or 5 (quoted delimiter, literal).
    """
    states = [0] * (len(script) + 1)
    state = _NONE
    pending_heredocs: list[tuple[str, bool, bool]] = []  # (delimiter, strip tabs, literal)
    i = 0
    n = len(script)
    while i < n:
        c = script[i]
        states[i] = state
        if state == _NONE:
            if c == "\\":
                states[i + 1 : i + 2] = [state]
                i += 2
                continue
            if c == "'":
                state = _SINGLE
            elif c == '"':
                state = _DOUBLE
            elif c == "$" and script.startswith("$'", i):
                state = _ANSI
                states[i + 1] = _NONE
                i += 2
                continue
            elif c == "#" and (i == 0 or script[i - 1] in " \t\n;"):
                j = script.find("\n", i)
                j = n if j < 0 else j
                for k in range(i, j):
                    states[k] = _NONE
                i = j
                continue
            elif c == "<" and script.startswith("<<", i) and not script.startswith("<<<", i):
                m = _HEREDOC.match(script, i)
                if m:
                    pending_heredocs.append((m.group(3), m.group(1) == "-", bool(m.group(2))))
                    for k in range(i, m.end()):
                        states[k] = _NONE
                    i = m.end()
                    continue
            elif c == "\n" and pending_heredocs:
                i += 1
                for delim, strip_tabs, literal in pending_heredocs:
                    body_state = 5 if literal else 4
                    while i < n:
                        j = script.find("\n", i)
                        j = n if j < 0 else j
                        line = script[i:j]
                        if (line.lstrip("\t") if strip_tabs else line) == delim:
                            for k in range(i, min(j + 1, n)):
                                states[k] = _NONE
                            i = j + 1
                            break
                        for k in range(i, min(j + 1, n)):
                            states[k] = body_state
                        i = j + 1
                pending_heredocs.clear()
                continue
        elif state == _SINGLE:
            if c == "'":
                state = _NONE
        else:  # double quotes or $'...': a backslash escapes the next character
            if c == "\\":
                states[i + 1 : i + 2] = [state]
                i += 2
                continue
            if c == ('"' if state == _DOUBLE else "'"):
                state = _NONE
        i += 1
    states[n] = state
    return states


def _reference(var: str, state: int) -> str:
    if state == _NONE:
        return f'"${{{var}}}"'
    if state in (_DOUBLE, 4):
        return f"${{{var}}}"
    if state in (_SINGLE, _ANSI):
        return f"'\"${{{var}}}\"'"
    raise AssertionError(state)


def render_script(
    script: str,
    contexts: Mapping[str, Any],
    *,
    posix: bool,
    failed: bool = False,
    cancelled: bool = False,
) -> tuple[str, dict[str, str]]:
    """The script with templates replaced, and the environment variables it now reads."""
    parts = expr.find_templates(script)
    if not parts:
        return script, {}
    states = _quote_states(script) if posix else []
    out: list[str] = []
    env: dict[str, str] = {}
    last = 0
    for part in parts:
        node = expr.parse(part.source)
        value = expr.evaluate(node, contexts, failed=failed, cancelled=cancelled)
        text = expr.to_text(value)
        out.append(script[last : part.start])
        last = part.end
        if is_trusted(node):
            out.append(text)
            continue
        if not posix:
            raise ShellTemplateError(
                f"'${{{{ {part.source} }}}}' reads data from outside the flow and this step's "
                "shell is not a POSIX shell, so it cannot be passed safely inside the script; "
                "set it in the step's 'env:' and read the environment variable instead"
            )
        state = states[part.start]
        if state == 5:
            # A quoted here-document is literal: the text cannot become code unless it holds
            # a line that ends the document, so only single-line values may go in.
            if "\n" in text:
                raise ShellTemplateError(
                    f"a multi-line value cannot go into a quoted here-document: {part.source}"
                )
            out.append(text)
            continue
        var = f"FLOWRAY_EXPR_{len(env)}"
        env[var] = text
        out.append(_reference(var, state))
    out.append(script[last:])
    return "".join(out), env


_BASH: str | None = None


def _bash() -> str | None:
    global _BASH
    if _BASH is None:
        _BASH = shutil.which("bash") or ""
    return _BASH or None


def shell_command(shell: str | None, script: str, script_file: str, *,
                  resolve: bool = True) -> tuple[list[str], bool]:
    """``(argv, posix)`` to run ``script`` with ``shell``.

    ``bash`` (the default where bash exists): ``bash --noprofile --norc -eo pipefail -c``;
    ``sh``: ``sh -e -c``; ``python``: ``python -c``; anything else is a command template in
    which ``{0}`` is replaced by a file holding the script (written by the caller to
    ``script_file`` when this function returns a command naming it). ``resolve=False``: the
    command runs elsewhere (a container): names are left for its ``PATH``.
    """
    if not resolve:
        if shell == "bash":
            return ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], True
        if shell in ("python", "python3"):
            return [shell, "-c", script], False
    if shell is None or shell == "bash":
        bash = _bash()
        if bash is None:
            if shell == "bash":
                raise ShellTemplateError("shell 'bash' is not installed on this machine")
            return ["sh", "-e", "-c", script], True
        return [bash, "--noprofile", "--norc", "-eo", "pipefail", "-c", script], True
    if shell == "sh":
        return ["sh", "-e", "-c", script], True
    if shell in ("python", "python3"):
        import sys

        return [sys.executable, "-c", script], False
    import shlex

    words = shlex.split(shell)
    if not any("{0}" in w for w in words):
        words.append("{0}")
    argv = [w.replace("{0}", script_file) for w in words]
    return argv, is_posix_shell(shell)
