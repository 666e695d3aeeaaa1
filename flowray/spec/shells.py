"""What validation and the runner agree on about ``run:`` scripts: which templates are trusted
(written by the flow's author: spliced into the script as text), how the shell reads the place
where each untrusted template stands, and where an untrusted value is refused.

The runner's side is ``flowray.execute.shell``: an untrusted value is put in an environment
variable and the template replaced by a reference to it, quoted to fit where it stands, which the
shell never reads as code. What is left are places where the shell hands text on to something
that reads it as code: here-documents and here-strings (the input of a command, often
``python3 - <<EOF``), arithmetic (bash evaluates ``a[$(cmd)]`` there), ``${...}`` expansions,
`` `...` ``, the code string of ``bash -c``/``python -c``/``perl -e``..., the arguments of
``eval``, ``trap``, ``alias``, ``ssh``, ``watch``, the program of ``sed``/``awk``, and variable
names (``declare``, ``unset``, ``read``, ``printf -v``). An untrusted template there is refused.

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
DELIMITER = "as a here-document delimiter"
AFTER_BACKSLASH = "right after a backslash"
_NAME_PART = "?"  # declare NAME=value: a template in NAME is refused (VARNAME), not in value


def _unsure(what: str) -> str:
    return (f"after {what}, where flowray cannot follow how the shell reads the rest of the "
            "script")


_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "busybox", "su", "flock",
                     "csh", "tcsh", "fish"})
_SCRIPTING = {"perl": "eE", "ruby": "e", "node": "ep", "nodejs": "ep", "php": "r",
              "rscript": "e", "lua": "e", "osascript": "e"}
_EVALUATING = frozenset({"eval", "trap", "alias", "ssh", "watch"})
_PROGRAMMED = frozenset({"sed", "gsed", "awk", "gawk", "mawk", "nawk"})
_DECLARING = frozenset({"declare", "typeset", "local", "readonly", "export"})
_NAMING = frozenset({"unset", "read", "mapfile", "readarray", "getopts"})
_RESERVED = frozenset({"!", "{", "}", "()", "if", "then", "else", "elif", "fi", "do", "done",
                       "while", "until", "time", "function", "coproc"})
_ARITH_TESTS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge", "-v"})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[|\+?=)")
_SUBSCRIPT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\[")
_META = " \t\n;&|<>()"


def _plain(word: str) -> str:
    """A word without its quotes (enough to recognise command names and options)."""
    return word.replace("'", "").replace('"', "").replace("\\", "")


class _Command:
    """The words of one simple command, read one at a time: whether the next word is still at
    the command's name position, and why a template in it would be read as code (or None).
    Incremental, so a long command costs no more than its length."""

    def __init__(self) -> None:
        self.prefix = True  # every word so far is a reserved word or an assignment
        self.named = False  # the command's name has been read
        self.fixed: str | None = None  # the reason for every later word (eval, let, ...)
        self.declaring = False
        self.next_only: str | None = None  # the reason for the next word alone (-c CODE)
        self.options_keep = False  # an option word keeps next_only (bash -c -e CODE)
        self.interp = ""  # the interpreter whose options are being read
        self.interp_arg = False  # the next word is the argument of one of its options
        self.program = ""  # sed or awk, while its program may still come
        self.program_given = False
        self.skip = False  # the next word is the argument of a sed/awk option

    def reason(self) -> str | None:
        if self.fixed:
            return self.fixed
        if self.next_only:
            return self.next_only
        if self.program and not self.program_given and not self.skip:
            return f"in the program of '{self.program}', which it runs as code"
        if self.declaring:
            return _NAME_PART
        return None

    def add(self, word: str) -> None:
        plain = _plain(word)
        if self.prefix and (plain in _RESERVED or _ASSIGNMENT.match(plain)):
            return
        self.prefix = False
        if self.next_only and not (self.options_keep and plain.startswith("-")):
            self.next_only = None
        if not self.named:
            self.named = True
            if plain in ("let", "(("):
                self.fixed = ARITHMETIC
            elif plain in _DECLARING:
                self.declaring = True
            elif plain in _NAMING:
                self.fixed = VARNAME
            elif plain in (".", "source"):
                self.fixed = (f"in an argument of '{plain}', which runs a file it names as "
                              "shell code")
        elif self.declaring and plain[:1] in "-+" and "i" in plain:
            self.fixed = ARITHMETIC
        self.sed_awk(plain)
        if self.interp:
            self.interpreter_option(plain)
        name = plain.rsplit("/", 1)[-1].lower()
        if name in _EVALUATING and not self.fixed:
            self.fixed = f"in an argument of '{name}', which runs it as shell code"
        if name in _PROGRAMMED:
            self.program, self.program_given, self.skip = name, False, False
        if _code_letters(name):
            self.interp, self.interp_arg = name, False
        if name == "printf":
            self.interp = "printf"

    def interpreter_option(self, plain: str) -> None:
        """A word after an interpreter's name, while its own options are being read."""
        name = self.interp
        if self.interp_arg:
            self.interp_arg = False
        elif name == "printf":
            if plain == "-v":
                self.next_only, self.options_keep = VARNAME, False
            if not plain.startswith("-"):
                self.interp = ""
        elif plain in ("--command", "--eval", "--print") or (
                re.fullmatch(r"-[A-Za-z]+", plain)
                and any(c in _code_letters(name) for c in plain[1:])):
            self.next_only = f"in the code that '{name} {plain}' runs"
            # bash -c [options] CODE [$0 args...]; python -c CODE [args...]
            self.options_keep = name in _SHELLS
            self.interp = ""
        elif plain in _OPTION_ARGS or (re.fullmatch(r"[-+][A-Za-z]+", plain)
                                        and plain[-1] in "oOWXIM"):
            self.interp_arg = True  # -o pipefail, -eo pipefail, -W ignore: an argument follows
        elif not plain.startswith(("-", "+")) and name not in ("su", "flock"):
            self.interp = ""  # a script or an operand: what follows is its arguments

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
            self.options_keep = False
            self.skip = self.program_given = True
        elif self.program_given:
            return
        elif plain in (("-v", "-F", "-f", "-i", "-W") if awk else ("-f", "--file", "-l")):
            self.skip = True
            self.program_given = plain in ("-f", "--file")
        elif not plain.startswith("-") or plain == "-":
            self.program_given = True


_OPTION_ARGS = frozenset({"-o", "+o", "-O", "+O", "-W", "-X", "-I", "-M", "-r", "--rcfile",
                          "--init-file", "--require"})


def _code_letters(name: str) -> str:
    """The option letters after which ``name`` (a program) runs its next argument as code."""
    if name in _SHELLS or re.fullmatch(r"(python|pypy)[0-9.]*", name):
        return "c"
    return _SCRIPTING.get(name, "")


class _Word:
    """The word being read in a list of commands, and why a template in it is code."""

    def __init__(self) -> None:
        self.start = -1  # where it started in the text, -1: between words
        self.reason: str | None = None
        self.name_end = -1  # declare NAME=value: where NAME ends, once looked for
        self.subscript_end = -1  # a[...]=value: where the subscript ends


class _Lexer:
    """Reads a script (with SENTINEL for each untrusted template) like bash does, just far
    enough to tell how each SENTINEL is read; see :func:`template_slots`."""

    def __init__(self, text: str) -> None:
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

    def commands(self, closer: str | None, refusal: str | None) -> None:
        """A list of commands up to ``closer`` (the ')' of $( ), ( ), <( )) or the end. A
        template anywhere in it is refused for ``refusal`` when that is given."""
        self.lists += 1
        me = self.lists
        t = self.t
        entry = self.i
        cmd = _Command()  # the current simple command
        word = _Word()
        target = ""  # "redirect" or "herestring": what the next word is
        case: list[str] = []  # states of the case commands we are in
        dbr = -1  # where in self.order the slots of the '[[' we are in start; -1: not in one
        dbr_arith = False
        at_word_start = True

        def begin() -> None:
            if word.start < 0:
                word.start = self.i
                word.name_end = word.subscript_end = -1
                if refusal:
                    word.reason = refusal
                elif target == "herestring":
                    word.reason = HERESTRING
                elif target == "redirect":
                    word.reason = None
                else:
                    word.reason = cmd.reason()
                    m = _SUBSCRIPT.match(t, self.i) if cmd.prefix else None
                    if m:  # a[...]=value: the subscript is arithmetic
                        close = t.find("]", m.end())
                        word.subscript_end = self.n if close < 0 else close

        def here() -> str | None:
            """Why a template at self.i, in the current word, is code (or None)."""
            if word.reason == _NAME_PART:
                if word.name_end < 0:
                    eq = t.find("=", word.start)
                    word.name_end = self.n if eq < 0 else eq
                return VARNAME if self.i < word.name_end else None
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
            cmd = _Command()
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
                if word.start >= 0:  # a=( ... ), or an extended glob
                    self.i += 1
                    self.commands(")", here())
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
                cmd = _Command()
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
        t, i = self.t, self.i
        if t.startswith("$((", i):
            self.i += 3
            self.nested("))", here(), arith=True, quoted=quoted)
        elif t.startswith("$(", i):
            self.i += 2
            self.commands(")", here())
        elif t.startswith("${", i):
            self.i += 2
            self.nested("}", here() or PARAM, quoted=quoted)
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
