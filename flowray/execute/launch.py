"""How python and node actions get their inputs in their argument vector without any input
value on the process's real command line.

DataTorch actions read their inputs as one JSON object from their arguments (``sys.argv[1]``,
``sys.argv[-1]``, ``datatorch.get_inputs()``; ``process.argv`` in node). Putting that JSON on
the command line would show every input, secrets included, to every user of the machine
(``/proc/<pid>/cmdline``, ``ps``). Instead the JSON goes into a file only the user can read
(0600, in a private folder removed when the step ends), and a small launcher puts it into the
argument vector inside the interpreter before the action's main file runs, and removes the
file once read (the folder goes when the step ends, whatever happened):

- python: ``python -c <launcher> <main file>``. The launcher sets ``sys.argv`` to ``[<main
  file>, <inputs JSON>]`` and ``sys.path[0]`` to the main file's folder, then runs the main
  file as ``__main__``, as ``python <main file> <inputs JSON>`` would. Where no ``datatorch``
  package can be imported (not installed, not in the action), a small ``datatorch`` module
  with ``get_inputs``, ``get_input`` and ``set_output`` stands in; a real one always wins.
- node: ``node --require <preload> <main file>``; the preload (in the same private folder)
  appends the inputs JSON to ``process.argv``.
"""

from __future__ import annotations

import os

INPUTS_ENV = "FLOWRAY_INPUTS_FILE"

# Run with `python -c`; argv: [-c, main file]. No input value is in it, and it imports
# nothing before it has put the main file's folder first on sys.path.
PYTHON_LAUNCHER = """\
import os, sys
main = sys.argv[1]
sys.path[0] = os.path.dirname(os.path.realpath(main))
with open(os.environ['FLOWRAY_INPUTS_FILE'], encoding='utf-8') as f:
    sys.argv = [main, f.read()]
try:
    os.unlink(f.name)  # read once: gone before the action's own code runs
except OSError:
    pass
import importlib.util
if importlib.util.find_spec('datatorch') is None:
    import types
    datatorch = types.ModuleType('datatorch')
    exec('''
'flowray stand-in for the DataTorch SDK action helpers (a real datatorch package wins)'
import json as _json
import sys as _sys

def get_inputs():
    'The step inputs: the JSON object that is the last argument.'
    try:
        value = _json.loads(_sys.argv[-1])
    except (ValueError, IndexError):
        return {}
    return value if isinstance(value, dict) else {}

def get_input(key):
    return get_inputs().get(key)

def set_output(var, value):
    print('::%s::%s' % (var, _json.dumps(value)), flush=True)
''', datatorch.__dict__)
    sys.modules['datatorch'] = datatorch
    del datatorch, types
def _hook(kind, error, tb, _shown=sys.excepthook):
    # A traceback starts in the main file, as it would without this launcher.
    inner = tb
    while inner is not None and inner.tb_frame.f_code.co_filename != main:
        inner = inner.tb_next
    if inner is not None:
        error.__traceback__ = tb = inner
    _shown(kind, error, tb)
sys.excepthook = _hook
import runpy
del f, importlib, _hook
runpy.run_path(main, run_name='__main__')
"""

NODE_PRELOAD = """\
'use strict';
const fs = require('fs');
const file = process.env.FLOWRAY_INPUTS_FILE;
if (file) {
  process.argv.push(fs.readFileSync(file, 'utf8'));
  try { fs.unlinkSync(file); } catch (e) { /* read once: gone before the action's code */ }
}
"""


class Launch:
    """A python or node action's command and the private folder that holds its inputs;
    :meth:`close` removes the folder (when the step has ended)."""

    def __init__(self, using: str, interpreter: str, main: str, payload: str) -> None:
        import tempfile  # here: its import costs start-up time every run would pay

        self.folder = tempfile.mkdtemp(prefix="flowray-step-")  # mode 0700
        try:
            inputs = os.path.join(self.folder, "inputs.json")
            fd = os.open(inputs, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
            self.env = {INPUTS_ENV: inputs}
            if using == "python":
                self.argv = [interpreter, "-c", PYTHON_LAUNCHER, main]
            else:
                preload = os.path.join(self.folder, "preload.cjs")
                fd = os.open(preload, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(NODE_PRELOAD)
                self.argv = [interpreter, "--require", preload, main]
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)
