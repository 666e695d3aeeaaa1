"""What validation and the runner agree on about ``run:`` scripts: which templates read trusted
data (spliced into the script as text) and which shells flowray can quote for (elsewhere a
template reading untrusted data is refused). The runner's side is ``flowray.execute.shell``."""

from __future__ import annotations

from flowray import expr

# Contexts written by the flow's author; everything else may come from outside the flow.
TRUSTED_CONTEXTS = frozenset({"matrix", "variables", "flow", "job", "run", "runner", "machine"})


def is_trusted(node: expr.Node) -> bool:
    """Whether a template reads only contexts the flow's author wrote."""
    return all(ref.context in TRUSTED_CONTEXTS for ref in expr.references(node))


def is_posix_shell(shell: str | None) -> bool:
    """Whether ``shell`` (a step's ``shell:`` value) is one whose quoting flowray knows."""
    if shell is None or shell in ("bash", "sh"):
        return True
    if shell in ("python", "python3"):
        return False
    import shlex

    try:
        words = shlex.split(shell)
    except ValueError:
        return False
    return bool(words) and words[0].rsplit("/", 1)[-1] in ("bash", "sh", "dash", "zsh", "ksh")


def untrusted_templates(script: str) -> list[str]:
    """Sources of the templates in ``script`` that read untrusted contexts."""
    return [
        part.source
        for part in expr.find_templates(script)
        if not is_trusted(expr.parse(part.source))
    ]
