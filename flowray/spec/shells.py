"""What validation and the runner agree on about ``run:`` scripts: which templates are trusted
(written by the flow's author: spliced into the script as text), how the shell reads the place
where each untrusted template stands, and where an untrusted value is refused.

The runner's side is ``flowray.execute.shell``: an untrusted value is put in an environment
variable and the template replaced by a reference to it, quoted to fit where it stands, which the
shell never reads as code. What is left are places where the shell hands text on to something
that reads it as code: here-documents and here-strings (the input of a command, often
``python3 - <<EOF``), arithmetic (bash evaluates ``a[$(cmd)]`` there), ``${...}`` expansions,
`` `...` ``, the code string of ``bash -c``/``python -c``/``perl -e``... (also attached to its
option, ``python3 -c"..."``), the options of such an interpreter (a value there may be
``-cCODE``), the arguments of ``eval``, ``trap``, ``alias``, ``ssh``, ``watch``, the program of
``sed``/``awk``, variable names (``declare``, ``unset``, ``read``, ``printf -v``, ``test -v``,
namerefs), and variables whose value is run (``PS4``, ``BASH_ENV``...). An untrusted template
there is refused.

:func:`template_slots` is a small shell tokenizer (POSIX ``sh`` and bash syntax: quotes,
comments, ``$( )``, here-documents, ``case``, ``[[ ]]``, ...). Where it cannot follow the script
(an unterminated quote, a here-document whose end it cannot find, an unmatched ``)``), every
template after that point is refused: it never guesses.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from flowray import expr

# A template whose value is not spliced stands as this character while the script is scanned.
SENTINEL = "\ue000"

# Author-written literals: spliced into the script as text. Everything else (inputs, event,
# secrets, env, steps, needs, the machine's paths and names in run/runner/machine, and any
# context not listed here) is untrusted.
TRUSTED_CONTEXTS = frozenset({"matrix", "variables"})
TRUSTED_KEYS = {"flow": frozenset({"name"}),
                "job": frozenset({"id", "key", "name", "status", "attempt"})}


@dataclass(frozen=True)
class Trust:
    """Which author-written contexts hold only literals for this script: a matrix or
    ``variables`` holding templates (``${{ fromJSON(inputs.x) }}``) is not author-written."""

    matrix: bool = True
    variables: bool = True


LITERAL = Trust()


def has_template(value: object) -> bool:
    """Whether a raw value (text, list, map) holds ``${{`` anywhere."""
    if isinstance(value, str):
        return "${{" in value
    if isinstance(value, dict):
        return any(has_template(k) or has_template(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_template(v) for v in value)
    return False


def is_trusted(node: expr.Node, trust: Trust = LITERAL) -> bool:
    """Whether a template reads only values the flow's author wrote literally."""
    for ref in expr.references(node):
        name = ref.context.lower()
        if (name == "matrix" and trust.matrix) or (name == "variables" and trust.variables):
            continue
        keys = TRUSTED_KEYS.get(name)
        first = ref.path[0] if ref.path else None
        if keys is not None and isinstance(first, str) and first.lower() in keys:
            continue
        return False
    return True


def is_posix_shell(shell: str | None) -> bool:
    """Whether ``shell`` (a step's ``shell:`` value) is one whose quoting flowray knows."""
    if shell is None or shell in ("bash", "sh"):
        return True
    if shell in ("python", "python3"):
        return False
    try:
        words = shlex.split(shell)
    except ValueError:
        return False
    return bool(words) and words[0].rsplit("/", 1)[-1] in ("bash", "sh", "dash", "zsh", "ksh")


def untrusted_templates(script: str, trust: Trust = LITERAL) -> list[str]:
    """Sources of the templates in ``script`` that read untrusted data."""
    return [
        part.source
        for part in expr.find_templates(script)
        if not is_trusted(expr.parse(part.source), trust)
    ]


# -- how the shell reads the place of a template

UNQUOTED, DOUBLE, SINGLE, ANSI = "unquoted", "double", "single", "ansi"
ARITH = "arith"  # bare inside $(( )), (( )) or $[ ]
REFUSED = "refused"


@dataclass(frozen=True)
class Slot:
    """Where one template stands: ``kind`` is how it is quoted there, or REFUSED with
    ``reason`` (the end of a sentence: "it stands in a here-document, ..."). ``number``: the
    place is arithmetic, where only a whole number may go (checked when the value is known)."""

    kind: str
    reason: str = ""
    number: bool = False


HEREDOC = ("in a here-document, whose text is the input of a command (often a program's code, "
           "as in 'python3 - <<EOF')")
HERESTRING = "in a here-string (<<<), which is the input of a command (often a program's code)"
ARITHMETIC = ("in arithmetic ($(( )), (( )), let, [[ ... -eq ... ]], an array subscript, a "
              "declare -i variable), where bash runs code held in a value such as a[$(cmd)]")
ARITH_SUB = ("in a substitution inside arithmetic (let, declare -i, an array subscript, "
             "[[ ... -eq ... ]]), whose result bash evaluates as code")
PARAM = "inside a ${...} expansion (an offset or subscript there is evaluated as code)"
BACKTICK = "inside a `...` command substitution"
VARNAME = "in a variable name (declare, unset, read, printf -v), where bash evaluates a[$(cmd)]"
NAMEREF = ("in the value of a nameref (declare -n), which is a variable name, where bash "
           "evaluates a[$(cmd)]")
TESTED_NAME = "in the variable name of 'test -v' ('[ -v NAME ]'), where bash evaluates a[$(cmd)]"
COMPOUND = ("in a value given to an array (declare -a/-A) outside '( )', which bash reads as "
            "'([key]=value ...)' and evaluates a[$(cmd)] in")
DELIMITER = "as a here-document delimiter"
AFTER_BACKSLASH = "right after a backslash"
_NAME_PART = "?"  # declare NAME=value: a template in NAME is refused (VARNAME), not in value


def _unsure(what: str) -> str:
    return (f"after {what}, where flowray cannot follow how the shell reads the rest of the "
            "script")


_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox", "su", "flock",
                     "csh", "tcsh", "fish"})


@dataclass(frozen=True)
class _Interpreter:
    """How a program that runs code reads its options: ``code``: the letters whose argument (or,
    for a shell, whose first operand) is code; ``stop``: letters whose argument is the rest of
    the word; ``next``: those of them whose argument is the next word when the rest is empty;
    ``loads``: those whose argument names a file or module it runs; ``ends``: those after whose
    argument its own options end (python -c CODE args...)."""

    code: str
    stop: str = ""
    next: str = ""
    loads: str = ""
    ends: str = ""


_SHELL = _Interpreter("c", "oO", "oO")
_PYTHON = _Interpreter("c", "WXm", "WXm", "", "cm")
_SCRIPTING = {
    "perl": _Interpreter("eE", "IMmDVCdx", "IMm", "Mm"),
    "ruby": _Interpreter("e", "IrCFEKTWx", "IrCFE", "r"),
    "node": _Interpreter("ep", "r", "r", "r"),
    "nodejs": _Interpreter("ep", "r", "r", "r"),
    "php": _Interpreter("rBRE", "cdfzt", "cdfzt", "cf"),
    "rscript": _Interpreter("e"),
    "lua": _Interpreter("e", "l", "l", "l"),
    "osascript": _Interpreter("e", "l", "l"),
}
_LONG_CODE = frozenset({"--command", "--eval", "--print"})
_LONG_ARGS = frozenset({"--rcfile", "--init-file", "--require", "--import", "--loader",
                        "--experimental-loader"})  # all of them name a file that is run
_EVALUATING = frozenset({"eval", "trap", "alias", "ssh", "watch"})
_PROGRAMMED = frozenset({"sed", "gsed", "awk", "gawk", "mawk", "nawk"})
_DECLARING = frozenset({"declare", "typeset", "local", "readonly", "export"})
_NAMING = frozenset({"unset", "read", "mapfile", "readarray", "getopts"})
_RESERVED = frozenset({"!", "{", "}", "()", "if", "then", "else", "elif", "fi", "do", "done",
                       "while", "until", "time", "function", "coproc"})
_ARITH_TESTS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge", "-v", "-R"})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[|\+?=)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SUBSCRIPT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\[")
# ${NAME:-word} and the other operators whose word is expanded as a word, not as arithmetic or
# a pattern
_DEFAULTING = re.compile(r"([A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*])(:?[-=+?])")
_META = " \t\n;&|<>()"
# How deep $( ), ( ), ${...}, $(( )) may nest in one another before the tokenizer stops (and
# refuses the templates from there on), well before Python's own recursion limit.
MAX_NESTING = 100

# Variables whose value the shell or a program runs as code, or that name a file it runs.
_CODE_VARIABLES = {
    **{f"PS{n}": "which bash expands as a prompt, running the $(...) in it (PS4 with set -x)"
       for n in range(5)},
    "PROMPT_COMMAND": "which bash runs as shell code",
    "BASH_ENV": "which names a file that bash runs as shell code when it starts",
    "ENV": "which names a file that sh runs as shell code when it starts",
    "PERL5OPT": "which holds options of perl, and an option can run code (-M)",
    "RUBYOPT": "which holds options of ruby, and an option can run code (-r)",
    "NODE_OPTIONS": "which holds options of node, and an option can run code (--require)",
    "GIT_SSH_COMMAND": "which git runs as a shell command",
    "LD_PRELOAD": "which names a library that every program started then loads and runs",
}


def _plain(word: str) -> str:
    """A word without its quotes (enough to recognise command names and options)."""
    return word.replace("'", "").replace('"', "").replace("\\", "")


def _interpreter(name: str) -> _Interpreter | None:
    """How ``name`` (a program) reads its options, if one of them makes it run code."""
    if name in _SHELLS:
        return _SHELL
    if re.fullmatch(r"(python|pypy)[0-9.]*", name):
        return _PYTHON
    return _SCRIPTING.get(name)


def _read_option(spec: _Interpreter, plain: str) -> tuple[str, str, str, bool]:
    """``(kind, option, letter, attached)`` of a word where ``spec``'s options are read: kind
    "code" (option: the word up to its code letter), "arg" (an option with an argument),
    "flag", "end" ('--') or "operand"; ``attached``: the argument is the rest of the word."""
    if plain == "--":
        return "end", plain, "", False
    if plain.startswith("--"):
        option, eq, _ = plain.partition("=")
        if option in _LONG_CODE:
            return "code", option, "", bool(eq)
        if option in _LONG_ARGS:
            return "arg", option, "", bool(eq)
        return "flag", option, "", False
    if len(plain) < 2 or plain[0] not in "-+":
        return "operand", plain, "", False
    for k, c in enumerate(plain[1:], 2):
        if not c.isalpha():
            break
        if c in spec.code and plain[0] == "-":
            # a shell's -c is a flag (the code is its first operand): bash -ce CODE
            # (named with all its letters: 'bash -ce', not with what follows them)
            return "code", _letters(plain) if spec is _SHELL else plain[:k], c, k < len(plain)
        if c in spec.stop:
            return "arg", plain[:k], c, k < len(plain)
    return "flag", plain, "", False


def _letters(option: str) -> str:
    """An option word up to the end of its letters: '-ce' of '-ce"$x"'."""
    end = 1
    while end < len(option) and option[end].isalpha():
        end += 1
    return option[:end]


def _option_refusal(name: str, prefix: str) -> str:
    """Why a template in a word where ``name`` reads its options is refused, ``prefix`` being
    the word's text before it."""
    spec = _interpreter(name)
    if spec is not None and prefix[:1] in ("-", "+"):
        kind, option, _, _ = _read_option(spec, prefix)
        if kind == "code":
            return f"in the code that '{name} {option}' runs"
    letter = spec.code[0] if spec else "c"
    return (f"where '{name}' reads its options, and an option can make it run code "
            f"('{name} -{letter}CODE'); write '--' before an operand that comes from outside")


class _Command:
    """The words of one simple command, read one at a time: whether the next word is still at
    the command's name position, and why a template in it would be read as code (or None).
    Incremental, so a long command costs no more than its length. ``typed``: the attributes
    (``declare -i``/``-n``/``-a``...) of the script's variables, filled as they are declared."""

    def __init__(self, typed: dict[str, str] | None = None) -> None:
        self.typed = {} if typed is None else typed
        self.prefix = True  # every word so far is a reserved word or an assignment
        self.named = False  # the command's name has been read
        self.name = ""
        self.fixed: str | None = None  # the reason for every later word (eval, let, ...)
        self.declaring = False
        self.attrs = ""  # the attribute letters given to declare/local/typeset
        self.env_args = False  # env NAME=value ...: its assignments are still being read
        self.next_only: str | None = None  # the reason for the next word alone (-c CODE)
        self.interp = ""  # the interpreter whose options are being read
        self.interp_arg: str | None = None  # the next word is the argument of this option
        self.arg_reason: str | None = None  # ... and why a template there is code
        self.then_end = False  # ... after which the interpreter's options end
        self.shell_code: str | None = None  # a shell's -c was read: its first operand is code
        self.dollar0 = False  # the next word is $0 of a shell's code (sh -c CODE sh args...)
        self.program = ""  # sed or awk, while its program may still come
        self.program_given = False
        self.skip = False  # the next word is the argument of a sed/awk option

    def reason(self) -> str | None:
        if self.fixed:
            return self.fixed
        if self.next_only:
            return self.next_only
        if self.interp and self.interp != "printf":
            if self.interp_arg is not None:
                return self.arg_reason
            if self.shell_code:
                return self.shell_code
        if self.program and not self.program_given and not self.skip:
            return f"in the program of '{self.program}', which it runs as code"
        if self.declaring:
            return _NAME_PART
        return None

    def options_of(self) -> str:
        """The interpreter whose options the next word may be (a template at its start, or
        in an option word, is refused), or ''."""
        if (self.interp and self.interp != "printf" and self.interp_arg is None
                and not self.shell_code and not self.fixed and not self.next_only):
            return self.interp
        return ""

    def assigns(self) -> bool:
        """Whether the next word, if it is NAME=value, is an assignment."""
        return self.prefix or self.env_args

    def add(self, word: str) -> None:
        plain = _plain(word)
        if self.prefix and (plain in _RESERVED or _ASSIGNMENT.match(plain)):
            return
        self.prefix = False
        self.next_only = None
        dollar0, self.dollar0 = self.dollar0, False
        if self.env_args and not (plain.startswith("-") or _ASSIGNMENT.match(plain)):
            self.env_args = False
        if not self.named:
            self.named = True
            self.name = plain
            if plain in ("let", "(("):
                self.fixed = ARITHMETIC
            elif plain in _DECLARING:
                self.declaring = True
            elif plain in _NAMING:
                self.fixed = VARNAME
            elif plain in (".", "source"):
                self.fixed = (f"in an argument of '{plain}', which runs a file it names as "
                              "shell code")
        elif self.declaring:
            self.declared(plain)
        elif self.name in ("test", "[") and plain in ("-v", "-R"):
            self.next_only = TESTED_NAME
        self.sed_awk(plain)
        if self.interp:
            self.interpreter_option(plain)
        name = plain.rsplit("/", 1)[-1].lower()
        if name in _EVALUATING and not self.fixed:
            self.fixed = f"in an argument of '{name}', which runs it as shell code"
        if name in _PROGRAMMED:
            self.program, self.program_given, self.skip = name, False, False
        if name == "env":
            self.env_args = True
        if _interpreter(name) and not dollar0:  # $0 is a name, not a program
            self.interp, self.interp_arg, self.shell_code = name, None, None
        if name == "printf":
            self.interp = "printf"

    def declared(self, plain: str) -> None:
        """A word after declare/typeset/local/readonly/export: an option, or a name whose
        attributes are recorded."""
        if plain[:1] in "-+":
            letters = plain[1:]
            if "n" in letters and self.name != "export":  # export -n: no longer exported
                self.fixed = NAMEREF
            elif "i" in letters:
                self.fixed = ARITHMETIC
            self.attrs += "".join(c for c in letters if c in "inaA")
            return
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", plain)
        if m and self.attrs:
            self.typed[m.group()] = self.typed.get(m.group(), "") + self.attrs

    def interpreter_option(self, plain: str) -> None:
        """A word after an interpreter's name, while its own options are being read."""
        name = self.interp
        if name == "printf":
            if plain == "-v":
                self.next_only = VARNAME
            if not plain.startswith("-"):
                self.interp = ""
            return
        if self.interp_arg is not None:  # the argument of an option
            self.interp_arg = self.arg_reason = None
            if self.then_end:
                self.interp = ""
            return
        spec = _interpreter(name)
        assert spec is not None
        kind, option, letter, attached = _read_option(spec, plain)
        if self.shell_code and kind in ("operand", "end"):
            if kind == "end":  # bash -c -- CODE
                self.next_only = self.shell_code
            else:
                self.dollar0 = True
            self.interp, self.shell_code = "", None
            return
        if kind == "end":
            self.interp = ""
        elif kind == "operand":
            if name not in ("su", "flock"):
                self.interp = ""  # a script or an operand: what follows is its arguments
        elif kind == "code":
            why = f"in the code that '{name} {option}' runs"
            if spec is _SHELL:
                self.shell_code = why
            elif not attached:
                self.next_only, self.interp_arg = why, option
                self.arg_reason, self.then_end = why, letter in spec.ends
            elif letter in spec.ends:
                self.interp = ""
        elif kind == "arg" and not attached and (option in _LONG_ARGS or letter in spec.next):
            self.interp_arg, self.then_end = option, letter in spec.ends
            self.arg_reason = (f"in the argument of '{name} {option}', which names a file or "
                               "module it runs" if option in _LONG_ARGS or letter in spec.loads
                               else None)
        elif kind == "arg" and letter in spec.ends:
            self.interp = ""  # python3 -mmodule args...

    def sed_awk(self, plain: str) -> None:
        """One argument of sed or awk: the argument of sed's -e, or the first operand when no
        -e/-f gave one, is its program."""
        if not self.program:
            return
        if self.skip:
            self.skip = False
            return
        awk = "awk" in self.program
        if not awk and (plain in ("-e", "--expression") or re.fullmatch(r"-[a-zA-Z]*e", plain)):
            self.next_only = f"in the program of '{self.program}', which it runs as code"
            self.skip = self.program_given = True
        elif self.program_given:
            return
        elif plain in (("-v", "-F", "-f", "-i", "-W") if awk else ("-f", "--file", "-l")):
            self.skip = True
            self.program_given = plain in ("-f", "--file")
        elif not plain.startswith("-") or plain == "-":
            self.program_given = True


class _Word:
    """The word being read in a list of commands, and why a template in it is code."""

    def __init__(self) -> None:
        self.start = -1  # where it started in the text, -1: between words
        self.reason: str | None = None
        # declare NAME=value: where NAME ends (its '='), -1 while not found; looked for from
        # eq_from on, so that the word is read once however many templates it holds
        self.name_end = -1
        self.eq_from = -1
        self.name: str | None = None  # NAME, once a template in its value needed it
        self.subscript_end = -1  # a[...]=value: where the subscript ends
        self.options_of = ""  # the interpreter whose options this word may be
        # why a template in it is refused as an option of options_of, once that no longer
        # depends on what follows in the word (see _Lexer.commands' here())
        self.option_why: str | None = None
        self.option_known = False
        self.assigned = ""  # NAME=value: NAME, and where the value starts
        self.value_at = -1
        self.attrs = ""  # declare -a NAME=value: the attributes given


class _Lexer:
    """Reads a script (with SENTINEL for each untrusted template) like bash does, just far
    enough to tell how each SENTINEL is read; see :func:`template_slots`."""

    def __init__(self, text: str, typed: dict[str, str] | None = None) -> None:
        self.typed: dict[str, str] = dict(typed or {})  # declare -i/-n/-a/-A: the names
        self.t = text
        self.n = len(text)
        self.i = 0
        self.slots: dict[int, Slot] = {}  # by the SENTINEL's position
        self.order: list[int] = []  # the positions in self.slots, in the order found
        self.unsure = ""
        self.unsure_at = len(text)  # templates from here on are refused
        # (delimiter, strip tabs, quoted, the list that read the '<<')
        self.pending: list[tuple[str, bool, bool, int]] = []
        self.lists = 0
        self.found: dict[str, tuple[int, int]] = {}  # see next_at
        self.depth = 0  # how many commands() and dollar() are being read, one in another

    def deeper(self) -> bool:
        """Enter one more level of nesting (commands() and dollar(), through which every
        recursion of the reading goes), or give up when there would be too many."""
        if self.depth > MAX_NESTING:  # the script itself is the first level
            self.give_up(f"more than {MAX_NESTING} levels of $( ), ( ), ${{...}} or $(( )) "
                         "in one another")
            return False
        self.depth += 1
        return True

    def next_at(self, c: str, start: int) -> int:
        """Where the first ``c`` at or after ``start`` is (self.n if none). Remembers the last
        answer for each character, so asking with ``start`` growing reads the text once."""
        lo, at = self.found.get(c, (self.n, -1))
        if not lo <= start <= at:
            lo, at = start, self.t.find(c, start)
            at = self.n if at < 0 else at
            self.found[c] = (lo, at)
        return at

    def assignment(self, i: int) -> tuple[str, int] | None:
        """NAME=value, NAME+=value, NAME[...]=value (the subscript on one line) at ``i``:
        NAME and where the value starts."""
        m = _NAME.match(self.t, i)
        if m is None:
            return None
        at = m.end()
        if self.t.startswith("[", at):
            close = self.next_at("]", at + 1)
            if close >= self.next_at("\n", at + 1):
                return None
            at = close + 1
        if self.t.startswith("+=", at):
            return m.group(), at + 2
        if self.t.startswith("=", at):
            return m.group(), at + 1
        return None

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.t[j] if j < self.n else ""

    def give_up(self, what: str, since: int | None = None) -> None:
        """Stop reading: from ``since`` (default: here) on, every template is refused."""
        if not self.unsure:
            self.unsure = _unsure(what)
        self.unsure_at = min(self.unsure_at, self.i if since is None else since)
        self.i = self.n

    def slot(self, at: int, kind: str, refusal: str | None = None, number: bool = False) -> None:
        if at not in self.slots:
            self.order.append(at)
        self.slots[at] = Slot(REFUSED, refusal) if refusal else Slot(kind, number=number)

    # -- command level

    def commands(self, closer: str | None, refusal: str | None, compound: bool = False) -> None:
        if self.deeper():
            try:
                self.command_list(closer, refusal, compound)
            finally:
                self.depth -= 1

    def command_list(self, closer: str | None, refusal: str | None, compound: bool) -> None:
        """A list of commands up to ``closer`` (the ')' of $( ), ( ), <( )) or the end. A
        template anywhere in it is refused for ``refusal`` when that is given. ``compound``:
        the list is the value of an array, a=( ... ), where [...]= is an arithmetic subscript."""
        self.lists += 1
        me = self.lists
        t = self.t
        entry = self.i
        cmd = _Command(self.typed)  # the current simple command
        word = _Word()
        target = ""  # "redirect" or "herestring": what the next word is
        case: list[str] = []  # states of the case commands we are in
        dbr = -1  # where in self.order the slots of the '[[' we are in start; -1: not in one
        dbr_arith = False
        at_word_start = True

        def begin() -> None:
            if word.start < 0:
                word.start = self.i
                word.name_end = word.subscript_end = word.value_at = -1
                word.eq_from, word.name = self.i, None
                word.options_of = word.assigned = word.attrs = ""
                word.option_why, word.option_known = None, False
                if refusal:
                    word.reason = refusal
                elif target == "herestring":
                    word.reason = HERESTRING
                elif target == "redirect":
                    word.reason = None
                else:
                    word.reason = cmd.reason()
                    word.attrs = cmd.attrs
                    if word.reason is None:
                        word.options_of = cmd.options_of()
                    found = self.assignment(self.i) if cmd.assigns() else None
                    if found:
                        word.assigned, word.value_at = found
                    m = _SUBSCRIPT.match(t, self.i) if cmd.prefix else None
                    if m or (compound and t.startswith("[", self.i)):
                        # a[...]=value, a=([...]=value): the subscript is arithmetic
                        word.subscript_end = self.next_at("]", m.end() if m else self.i)

        def here() -> str | None:
            """Why a template at self.i, in the current word, is code (or None)."""
            if word.reason == _NAME_PART:
                if word.name_end < 0:  # the word's first '=', looked for up to here
                    eq = t.find("=", word.eq_from, self.i + 1)
                    word.eq_from = self.i + 1
                    if eq < 0:
                        return VARNAME
                    word.name_end = eq
                if self.i < word.name_end:
                    return VARNAME
                if word.name is None:
                    name = _NAME.match(_plain(t[word.start:word.name_end]))
                    word.name = name.group() if name else ""
                return self.value_reason(word.name, word.attrs,
                                         t[word.name_end + 1:word.name_end + 2] == "(")
            if word.options_of:
                if word.option_known:
                    return word.option_why
                prefix = _plain(t[word.start:self.i])
                why = (_option_refusal(word.options_of, prefix)
                       if prefix[:1] in ("", "-", "+", "$", "`") else None)
                # What decides it is the word's first character and, after '-' or '+', its
                # letters (up to '=' after '--'): known once the word holds something else.
                # The place of this template holds such a character when the next one comes.
                word.option_known = bool(prefix) and (
                    prefix[0] not in "-+" or any(not (c.isalpha() or c == "-")
                                                 for c in prefix[1:]))
                word.option_why = why
                return why
            if word.reason is None and word.assigned and self.i >= word.value_at:
                why = self.value_reason(word.assigned)
                if why:
                    return why
            if word.reason is None and self.i < word.subscript_end:
                return ARITH_SUB
            return ARITH_SUB if word.reason == ARITHMETIC else word.reason

        def record(kind: str) -> None:
            why = here()
            if why == ARITH_SUB:  # the template itself: a number is safe there
                self.slot(self.i, kind, number=True)
            else:
                self.slot(self.i, kind, why)

        def finish() -> None:
            nonlocal target, dbr, dbr_arith
            if word.start < 0:
                return
            begun, word.start = word.start, -1
            text = t[begun:self.i]
            plain = _plain(text)
            if target:
                target = ""
                return
            if dbr >= 0:
                if plain == "]]":
                    if dbr_arith:
                        for at in self.order[dbr:]:
                            found = self.slots[at]
                            if found.kind != REFUSED:
                                self.slots[at] = Slot(found.kind, number=True)
                    dbr, dbr_arith = -1, False
                elif plain in _ARITH_TESTS:
                    dbr_arith = True
                cmd.add(text)
                return
            if case and case[-1] == "subject":
                case[-1] = "in"
                return
            if case and case[-1] == "in":
                if plain == "in":
                    case[-1] = "pattern"
                return
            if case and case[-1] == "pattern":
                if plain == "esac":
                    case.pop()
                return
            if cmd.prefix:
                if plain == "case":
                    case.append("subject")
                elif plain == "esac" and case:
                    case.pop()
                elif plain == "[[":
                    dbr = len(self.order)
            cmd.add(text)

        def end_command() -> None:
            nonlocal target, cmd
            finish()
            cmd = _Command(self.typed)
            target = ""

        while self.i < self.n:
            c = t[self.i]
            if c == SENTINEL:
                begin()
                record(UNQUOTED)
                self.i += 1
                at_word_start = False
                continue
            if dbr >= 0 and c in "<>()|&":
                begin()  # inside [[ ]] these are operators of the test, not of the shell
                self.i += 1
                at_word_start = False
                continue
            if c in " \t":
                finish()
                self.i += 1
                at_word_start = True
                continue
            if c == "\n":
                end_command()
                self.i += 1
                at_word_start = True
                if self.pending:
                    if any(p[3] != me for p in self.pending):
                        self.give_up("a here-document that starts in one part of the script "
                                     "and is read in another")
                        break
                    self.bodies()
                continue
            if c == "#" and at_word_start and word.start < 0:
                end = t.find("\n", self.i)
                end = self.n if end < 0 else end
                for at in range(self.i, end):
                    if t[at] == SENTINEL:
                        self.slot(at, UNQUOTED)  # a comment: the reference does nothing
                self.i = end
                continue
            if c == "\\":
                if self.peek(1) == "\n":  # a line continuation
                    self.i += 2
                    continue
                begin()
                if self.peek(1) == SENTINEL:
                    self.slot(self.i + 1, REFUSED, AFTER_BACKSLASH)
                self.i += 2
                at_word_start = False
                continue
            if c == "'":
                begin()
                self.single(SINGLE, record)
                at_word_start = False
                continue
            if c == '"':
                begin()
                self.i += 1
                self.double(record, here)
                at_word_start = False
                continue
            if c == "`":
                begin()
                self.backtick()
                at_word_start = False
                continue
            if c == "$":
                begin()
                self.dollar(record, here)
                at_word_start = False
                continue
            if case and case[-1] == "pattern" and c in "()|":
                finish()  # may be 'esac', which ends the case
            if case and case[-1] == "pattern" and c in "()|":
                if c == ")":
                    case[-1] = "body"
                self.i += 1
                at_word_start = True
                continue
            if c in ";&|":
                two = t[self.i:self.i + 2]
                if two == "&>":
                    finish()
                    self.i += 3 if t.startswith("&>>", self.i) else 2
                    target = "redirect"
                    at_word_start = True
                    continue
                end_command()
                if two in (";;", ";&") and case:
                    case[-1] = "pattern"
                    self.i += 3 if t.startswith(";;&", self.i) else 2
                elif two in ("&&", "||", "|&", ";;", ";&"):
                    self.i += 2
                else:
                    self.i += 1
                at_word_start = True
                continue
            if c in "<>":
                finish()
                if t.startswith("<<<", self.i):
                    self.i += 3
                    target = "herestring"
                elif t.startswith("<<", self.i):
                    self.i += 2
                    strip = self.peek() == "-"
                    self.i += 1 if strip else 0
                    self.delimiter(strip, me)
                    target = ""
                elif self.peek(1) == "(":  # <( ) or >( )
                    begin()
                    self.i += 2
                    self.commands(")", here())
                    finish()
                else:
                    self.i += 1
                    while self.peek() and self.peek() in "&>|":
                        self.i += 1
                    target = "redirect"
                at_word_start = True
                continue
            if c == "(":
                if word.start >= 0 and t.startswith("()", self.i) and cmd.prefix:
                    finish()  # name() { ...: a function's body starts a command
                    self.i += 2
                    cmd = _Command(self.typed)
                    cmd.add("()")
                    at_word_start = True
                    continue
                if word.start >= 0:  # a=( ... ), or an extended glob
                    self.i += 1
                    self.commands(")", here(), compound=t[self.i - 2] == "=")
                    at_word_start = False
                    continue
                if self.peek(1) == "(" and cmd.prefix:
                    self.i += 2
                    self.nested("))", refusal, arith=True)
                    cmd.add("((")
                    at_word_start = True
                    continue
                self.i += 1
                self.commands(")", refusal)
                cmd = _Command(self.typed)
                cmd.add("()")
                at_word_start = True
                continue
            if c == ")":
                if closer == ")":
                    end_command()
                    self.i += 1
                    if any(p[3] == me for p in self.pending):
                        self.give_up("a here-document that starts inside $( ) and is not "
                                     "read there")
                    return
                self.give_up("an unmatched ')'")
                break
            begin()
            self.i += 1
            at_word_start = False
        finish()
        if closer is not None:
            self.give_up("a '(' or '$(' that is never closed", entry)

    def value_reason(self, name: str, attrs: str | None = None,
                     compound: bool = False) -> str | None:
        """Why a template in the value assigned to ``name`` is code (ARITH_SUB: a number is
        safe there), or None. ``attrs``: given when a declare command assigns it (with the
        attributes it gives): a value not in '( )' that such a command gives to an array is
        read as '([key]=value ...)'; ``compound``: the value is in '( )'."""
        if name in _CODE_VARIABLES:
            return f"in the value of {name}, {_CODE_VARIABLES[name]}"
        typed = self.typed.get(name, "")
        if "n" in typed:
            return NAMEREF
        if "i" in typed:
            return ARITH_SUB
        if attrs is not None and not compound and ("a" in typed + attrs or "A" in typed + attrs):
            return COMPOUND
        return None

    # -- parts of words

    def single(self, kind: str, record: Callable[[str], None]) -> None:
        """'...' (or $'...' when kind is ANSI), from its opening quote."""
        entry = self.i
        self.i += 1
        while self.i < self.n:
            c = self.t[self.i]
            if c == "'":
                self.i += 1
                return
            if c == "\\" and kind == ANSI:
                if self.peek(1) == SENTINEL:
                    self.slot(self.i + 1, REFUSED, AFTER_BACKSLASH)
                self.i += 2
                continue
            if c == SENTINEL:
                record(kind)
            self.i += 1
        self.give_up("an unterminated quote", entry)

    def double(self, record: Callable[[str], None], here: Callable[[], str | None]) -> None:
        """"...", from after its opening quote."""
        entry = self.i
        while self.i < self.n:
            c = self.t[self.i]
            if c == '"':
                self.i += 1
                return
            if c == "\\":
                if self.peek(1) == SENTINEL:
                    self.slot(self.i + 1, REFUSED, AFTER_BACKSLASH)
                self.i += 2
                continue
            if c == SENTINEL:
                record(DOUBLE)
                self.i += 1
                continue
            if c == "`":
                self.backtick()
                continue
            if c == "$":
                self.dollar(record, here, quoted=True)
                continue
            self.i += 1
        self.give_up("an unterminated quote", entry)

    def dollar(self, record: Callable[[str], None], here: Callable[[], str | None],
               quoted: bool = False) -> None:
        """What starts with '$' at self.i."""
        if self.t.startswith("$(", self.i) and not self.t.startswith("$((", self.i):
            self.dollar_part(record, here, quoted)  # a level that commands() counts
        elif self.deeper():
            try:
                self.dollar_part(record, here, quoted)
            finally:
                self.depth -= 1

    def dollar_part(self, record: Callable[[str], None], here: Callable[[], str | None],
                    quoted: bool) -> None:
        t, i = self.t, self.i
        if t.startswith("$((", i):
            self.i += 3
            self.nested("))", here(), arith=True, quoted=quoted)
        elif t.startswith("$(", i):
            self.i += 2
            self.commands(")", here())
        elif t.startswith("${", i):
            self.i += 2
            why = here()
            m = None if why else _DEFAULTING.match(t, self.i)
            name = m.group(1) if m else ""
            if m is None or (m.group(2)[-1] == "=" and self.value_reason(name)):
                self.nested("}", why or PARAM, quoted=quoted)
            else:
                self.i = m.end()
                self.word_in_param(record, here, quoted)
        elif t.startswith("$[", i):
            self.i += 2
            self.nested("]", here(), arith=True, quoted=quoted)
        elif t.startswith("$'", i) and not quoted:
            self.i += 1
            self.single(ANSI, record)
        elif t.startswith('$"', i) and not quoted:
            self.i += 2
            self.double(record, here)
        else:
            self.i += 1

    def word_in_param(self, record: Callable[[str], None], here: Callable[[], str | None],
                      quoted: bool) -> None:
        """The word of ${x:-word} (also -, :=, =, :+, +, :?, ?), up to its '}': the shell
        expands it as a word (inside the double quotes around the ${...}, if any), so a
        template there is data."""
        entry = self.i
        level = 0
        t = self.t
        while self.i < self.n:
            c = t[self.i]
            if c == SENTINEL:
                record(DOUBLE if quoted else UNQUOTED)
                self.i += 1
            elif c == "\\":
                if self.peek(1) == SENTINEL:
                    self.slot(self.i + 1, REFUSED, AFTER_BACKSLASH)
                self.i += 2
            elif c == "'" and quoted:
                self.give_up("a quote inside ${...} in double quotes, which shells read "
                             "differently", entry)
                return
            elif c == "'":
                self.single(SINGLE, record)
            elif c == '"':
                self.i += 1
                self.double(record, here)
            elif c == "`":
                self.backtick()
            elif c == "$":
                self.dollar(record, here, quoted=quoted)
            elif c == "}" and level == 0:
                self.i += 1
                return
            else:
                level += {"{": 1, "}": -1}.get(c, 0)
                self.i += 1
        self.give_up("an expression that is never closed (no '}')", entry)

    def backtick(self) -> None:
        """`...`: every template inside is refused."""
        entry = self.i
        self.i += 1
        while self.i < self.n:
            c = self.t[self.i]
            if c == "`":
                self.i += 1
                return
            if c == "\\":
                self.i += 1
            elif c == SENTINEL:
                self.slot(self.i, REFUSED, BACKTICK)
            self.i += 1
        self.give_up("an unterminated `...`", entry)

    def nested(self, stop: str, refusal: str | None, *, arith: bool = False,
               quoted: bool = False) -> None:
        """Text up to ``stop`` ('))' of arithmetic, ']' of $[ ], '}' of ${ }): skips quotes and
        substitutions, counts brackets. Every template in it is refused for ``refusal``, except,
        in arithmetic (``arith``) without one, a template standing bare or in double quotes:
        there a whole number is safe, and only one may go."""
        reason = refusal or ARITH_SUB

        def refuse(_kind: str) -> None:
            self.slot(self.i, REFUSED, reason)

        def number(kind: str) -> None:
            if refusal:
                self.slot(self.i, REFUSED, refusal)
            else:
                self.slot(self.i, kind, number=True)

        def why() -> str:
            return reason

        opens = {")": "(", "]": "[", "}": "{"}[stop[0]]
        level = 0
        t = self.t
        entry = self.i
        while self.i < self.n:
            c = t[self.i]
            if c == SENTINEL:
                number(ARITH) if arith else refuse("")
                self.i += 1
            elif c == "\\":
                if self.peek(1) == SENTINEL:
                    self.slot(self.i + 1, REFUSED, refusal or AFTER_BACKSLASH)
                self.i += 2
            elif c == "'" and quoted:
                # "${x:-'...'}": bash reads these quotes, POSIX sh (dash) does not
                self.give_up("a quote inside ${...} in double quotes, which shells read "
                             "differently", entry)
                return
            elif c == "'":
                self.single(SINGLE, refuse)
            elif c == '"':
                self.i += 1
                self.double(number if arith else refuse, why)
            elif c == "`":
                self.backtick()
            elif c == "$":
                self.dollar(refuse, why, quoted=quoted)
            elif c == opens:
                level += 1
                self.i += 1
            elif c == stop[0] and level > 0:
                level -= 1
                self.i += 1
            elif c == stop[0]:
                if not t.startswith(stop, self.i):
                    self.give_up(f"a '{stop[0]}' where flowray expected '{stop}'", entry)
                    return
                self.i += len(stop)
                return
            else:
                self.i += 1
        self.give_up(f"an expression that is never closed (no '{stop}')", entry)

    # -- here-documents

    def delimiter(self, strip: bool, me: int) -> None:
        """The word after '<<' or '<<-': the delimiter, and whether it is quoted."""
        t = self.t
        while self.peek() and self.peek() in " \t":
            self.i += 1
        text: list[str] = []
        quoted = False
        while self.i < self.n and t[self.i] not in _META:
            c = t[self.i]
            if c == SENTINEL:
                self.slot(self.i, REFUSED, DELIMITER)
                self.give_up("a here-document delimiter that is a template")
                return
            if c == "\\":
                quoted = True
                text.append(self.peek(1))
                self.i += 2
            elif c in "'\"":
                quoted = True
                end = t.find(c, self.i + 1)
                inner = t[self.i + 1:end]
                if end < 0 or SENTINEL in inner or (c == '"' and any(x in inner for x in "\\$`")):
                    self.give_up("a here-document delimiter flowray cannot read")
                    return
                text.append(inner)
                self.i = end + 1
            elif c in "$`":
                self.give_up("a here-document delimiter flowray cannot read")
                return
            else:
                text.append(c)
                self.i += 1
        word = "".join(text)
        if not word or "\n" in word:
            self.give_up("a '<<' without a delimiter flowray can read")
            return
        self.pending.append((word, strip, quoted, me))

    def bodies(self) -> None:
        """The bodies of the pending here-documents, from the start of the line after their
        '<<': every template in them is refused."""
        t = self.t
        for word, strip, quoted, _ in self.pending:
            while self.i < self.n:  # bash ends a document at the end of the script
                first = self.i
                end = t.find("\n", first)
                end = self.n if end < 0 else end
                piece = t[first:end]
                # unquoted, a backslash-newline joins lines before the delimiter is looked for
                pieces = []
                while not quoted and _odd_backslashes(piece) and end < self.n:
                    pieces.append(piece[:-1])
                    nxt = t.find("\n", end + 1)
                    nxt = self.n if nxt < 0 else nxt
                    piece = t[end + 1:nxt]
                    end = nxt
                line = "".join(pieces) + piece if pieces else piece
                for at in range(first, end):
                    if t[at] == SENTINEL:
                        self.slot(at, REFUSED, HEREDOC)
                self.i = min(end + 1, self.n)
                if (line.lstrip("\t") if strip else line) == word:
                    break
        self.pending.clear()


def _odd_backslashes(line: str) -> bool:
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def template_slots(text: str) -> list[Slot]:
    """How the shell reads the place of each SENTINEL in ``text``, in order."""
    lexer = _Lexer(text)
    lexer.commands(None, None)
    if lexer.typed:  # read again knowing every name declared -i/-n/-a/-A in the script
        lexer = _Lexer(text, lexer.typed)
        lexer.commands(None, None)
    lost = Slot(REFUSED, lexer.unsure or _unsure("a part of the script"))
    return [lexer.slots.get(at, lost) if at < lexer.unsure_at else lost
            for at, c in enumerate(text) if c == SENTINEL]


STEP_ADVICE = ("set it in the step's 'env:' and have the command read the environment "
               "variable (os.environ[\"NAME\"] in Python, \"$NAME\" in a shell)")
ACTION_ADVICE = ("have the command read the input from its environment variable instead "
                 "(\"$INPUT_<NAME>\" in a shell, os.environ[\"INPUT_<NAME>\"] in Python)")


def refusal(source: str, slot: Slot, line: int, advice: str = STEP_ADVICE) -> str:
    """The message for an untrusted template refused where it stands."""
    return (
        f"'${{{{ {source} }}}}' (line {line} of the script) reads data from outside the flow "
        f"and stands {slot.reason}: flowray cannot pass it there safely; {advice}"
    )


_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


def is_whole_number(text: str) -> bool:
    """Whether ``text`` may stand in arithmetic: digits, with an optional sign."""
    return _WHOLE_NUMBER.fullmatch(text) is not None


def not_a_number(source: str, line: int) -> str:
    """The message for an untrusted value in arithmetic that is not a whole number."""
    return (
        f"'${{{{ {source} }}}}' (line {line} of the script) stands {ARITHMETIC}, so only a "
        "whole number may go there, and its value is not one"
    )


def script_problems(script: str, trust: Trust = LITERAL, advice: str = STEP_ADVICE) -> list[str]:
    """Why untrusted templates in the ``run`` script of a POSIX shell step cannot be passed
    safely (checked before anything runs; the runner checks again with the real values of
    trusted templates spliced in). Raises ``expr.ExprError`` for a bad template."""
    parts = expr.find_templates(script)
    pieces: list[str] = []
    untrusted: list[expr.TemplatePart] = []
    last = 0
    for part in parts:
        pieces.append(script[last:part.start])
        last = part.end
        if is_trusted(expr.parse(part.source), trust):
            pieces.append("x")
        else:
            pieces.append(SENTINEL)
            untrusted.append(part)
    pieces.append(script[last:])
    if not untrusted:
        return []
    text = "".join(pieces)
    if text.count(SENTINEL) != len(untrusted):
        return [f"the script holds the character U+E000, which flowray uses to find "
                f"templates; remove it (it reads {len(untrusted)} untrusted template(s))"]
    out = []
    line, counted = 1, 0
    for part, slot in zip(untrusted, template_slots(text), strict=True):
        if slot.kind == REFUSED:
            line += script.count("\n", counted, part.start)
            counted = part.start
            out.append(refusal(part.source, slot, line, advice))
    return out
