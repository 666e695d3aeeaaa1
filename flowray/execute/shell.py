"""Turning a ``run:`` script with ``${{ }}`` templates into a command, without shell injection.

Templates that read only values the flow's author wrote literally (``matrix``, ``variables``,
``flow.name``, ``job.id``...: see ``flowray.spec.shells``) are spliced in as text, so
``run: ${{ matrix.cmd }}`` runs a command from the matrix. Any other template (``inputs``,
``event``, ``secrets``, ``env``, step and job outputs, the machine's paths in ``run``,
``runner``, ...) is never spliced into the script: its value is put in an environment variable
``FLOWRAY_EXPR_<n>`` and the template is replaced by a reference to it, quoted to fit where it
stands (unquoted, in double quotes, in single quotes, in ``$'...'``), which the shell reads as
data. Where the shell would hand the value on as code (a here-document, arithmetic, ``eval``,
``bash -c``...) or where the tokenizer cannot follow the script, the template is refused
(:class:`ShellTemplateError`), and so it is in shells that are not POSIX shells (``python``,
custom commands), which have no such quoting.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from typing import Any

from flowray import expr
from flowray.spec.shells import (
    ANSI,
    ARITH,
    DOUBLE,
    LITERAL,
    REFUSED,
    SENTINEL,
    SINGLE,
    STEP_ADVICE,
    UNQUOTED,
    Trust,
    is_posix_shell,
    is_trusted,
    is_whole_number,
    not_a_number,
    refusal,
    template_slots,
)

_REFERENCE = {
    UNQUOTED: '"${{{0}}}"',
    DOUBLE: "${{{0}}}",
    SINGLE: "'\"${{{0}}}\"'",
    ANSI: "'\"${{{0}}}\"$'",
    ARITH: "${{{0}}}",
}


class ShellTemplateError(ValueError):
    pass


def render_script(
    script: str,
    contexts: Mapping[str, Any],
    *,
    posix: bool,
    failed: bool = False,
    cancelled: bool = False,
    trust: Trust = LITERAL,
    advice: str = STEP_ADVICE,
) -> tuple[str, dict[str, str]]:
    """The script with templates replaced, and the environment variables it now reads.

    Trusted templates are spliced in first, so the script is scanned as the shell will read
    it; a refused template raises :class:`ShellTemplateError` (nothing has run)."""
    parts = expr.find_templates(script)
    if not parts:
        return script, {}
    pieces: list[str] = []
    untrusted: list[tuple[expr.TemplatePart, str]] = []
    last = 0
    for part in parts:
        node = expr.parse(part.source)
        value = expr.evaluate(node, contexts, failed=failed, cancelled=cancelled)
        text = expr.to_text(value)
        pieces.append(script[last:part.start])
        last = part.end
        if is_trusted(node, trust):
            pieces.append(text)
            continue
        if not posix:
            raise ShellTemplateError(
                f"'${{{{ {part.source} }}}}' reads data from outside the flow and this step's "
                "shell is not a POSIX shell, so it cannot be passed safely inside the script; "
                "set it in the step's 'env:' and read the environment variable instead"
            )
        pieces.append(SENTINEL)
        untrusted.append((part, text))
    pieces.append(script[last:])
    body = "".join(pieces)
    if not untrusted:
        return body, {}
    if body.count(SENTINEL) != len(untrusted):
        raise ShellTemplateError(
            "the script (with the values of its trusted templates) holds the character U+E000, "
            "which flowray uses to place untrusted values; remove it"
        )
    slots = template_slots(body)
    for (part, text), slot in zip(untrusted, slots, strict=True):
        if slot.kind == REFUSED:
            line = script.count("\n", 0, part.start) + 1
            raise ShellTemplateError(refusal(part.source, slot, line, advice))
        if slot.number and not is_whole_number(text):
            line = script.count("\n", 0, part.start) + 1
            raise ShellTemplateError(not_a_number(part.source, line))
    out: list[str] = []
    env: dict[str, str] = {}
    chunks = body.split(SENTINEL)
    for k, ((_, text), slot) in enumerate(zip(untrusted, slots, strict=True)):
        var = f"FLOWRAY_EXPR_{k}"
        env[var] = text
        out.append(chunks[k])
        out.append(_REFERENCE[slot.kind].format(var))
    out.append(chunks[-1])
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
