"""The `${{ }}` expression language (GitHub Actions expressions), with flowray's own parser.

Syntax, loosest binding first: `||`, `&&`, `== !=`, `< <= > >=`, `!`, then `.name`, `[index]`,
`.*`/`[*]` and `( )`. Literals: `null true false NaN Infinity`, numbers (`-1.5e3`, `0xff`,
`0o17`) and 'single-quoted' strings ('' is a quote). A name at the start of a path is a context
(`steps`, `matrix`, `env`, ...); a name followed by `(` is a function call.

Semantics follow GitHub:
- A missing property or index is null, never an error; names are matched ignoring case.
- `a.*` is the list of a map's values or a list's items; `.b` after it maps over that list.
- `==`/`!=`/`<`... convert both sides to numbers when their kinds differ (null is 0, true is 1,
  '' is 0, other text that is not a number is NaN); strings compare ignoring case; lists and maps
  are equal only to themselves.
- `&&` and `||` short-circuit and return an operand; null, false, 0, -0, NaN and '' are falsy.
- Functions (any case): contains, startsWith, endsWith, format('{0}', ...), join(list, sep=','),
  toJSON (2-space indent), fromJSON, and the status functions success, failure, always, cancelled.
  Unknown functions and wrong argument counts are syntax errors.

Templates: `render()` replaces `${{ expr }}` in strings (and inside lists and map values). A string
that is exactly one template keeps the value's type; otherwise results are spliced in as text
(`to_text`: null is '', booleans 'true'/'false', 30 not 30.0, lists and maps as compact JSON).

Parsing is cached by source text; nothing is ever handed to Python's `eval`.
"""

from __future__ import annotations

from ._errors import ContextValueError, ExprError, ExprEvalError, ExprSyntaxError
from ._functions import KNOWN_FUNCTIONS, STATUS_FUNCTIONS
from ._nodes import (
    And,
    Call,
    Compare,
    ContextAccess,
    Expression,
    Filter,
    Index,
    Literal,
    Node,
    Not,
    Or,
    Property,
    Reference,
)
from ._parser import parse
from ._templates import (
    TemplatePart,
    evaluate,
    evaluate_condition,
    find_templates,
    functions_called,
    is_template,
    references,
    render,
    uses_status_function,
)
from ._values import loose_equal, to_text, truthy

__all__ = [
    "KNOWN_FUNCTIONS",
    "STATUS_FUNCTIONS",
    "And",
    "Call",
    "Compare",
    "ContextAccess",
    "ContextValueError",
    "ExprError",
    "ExprEvalError",
    "ExprSyntaxError",
    "Expression",
    "Filter",
    "Index",
    "Literal",
    "Node",
    "Not",
    "Or",
    "Property",
    "Reference",
    "TemplatePart",
    "evaluate",
    "evaluate_condition",
    "find_templates",
    "functions_called",
    "is_template",
    "loose_equal",
    "parse",
    "references",
    "render",
    "to_text",
    "truthy",
    "uses_status_function",
]
