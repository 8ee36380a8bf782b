"""Text from outside (agents' answers, their error messages, their results) made safe to
show: in status, in Events, on a person's terminal.

An agent answers whatever it likes. Written as it came, a control character or an ANSI
escape sequence in an error message would move the cursor, recolour or clear the screen
of whoever runs ``kubectl describe`` or ``kubectl optiinfra plan``, or forge a line of
the output (a newline, a carriage return). ``clean`` removes them: every C0 and C1
control character (with DEL), whole ANSI escape sequences (CSI ``ESC [ ... final``,
OSC ``ESC ] ... BEL`` or ``ESC \\``, and two-character ``ESC x``), and the Unicode
bidirectional overrides that reorder what a terminal shows. Newlines and tabs are kept
only where asked (``keep``); elsewhere each becomes a space, so one message stays one line.
``clean_value`` does the same to every string (keys and values) of a JSON-like value,
to a bounded depth.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

MAX_DEPTH: Final = 32
"""How deep ``clean_value`` follows nested objects and lists; deeper is replaced by
``TOO_DEEP``."""
TOO_DEEP: Final = f"(nested deeper than {MAX_DEPTH} levels: left out)"

_ESCAPES: Final = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"  # CSI: ESC [ parameters intermediates final
    r"|\x9b[0-?]*[ -/]*[@-~]?"  # CSI as one C1 character
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d-\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC, DCS...
    r"|\x1b[ -/]*[0-~]?"  # any other escape: ESC, intermediates, final
)
_CONTROLS: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"  # C0 but tab and newline, DEL, C1
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"  # bidirectional marks and overrides
)
_LINE_BREAKS: Final = re.compile("[\n\t\u2028\u2029]")


def clean(text: str, *, keep: str = "") -> str:
    """`text` without control characters and escape sequences; the newlines and tabs
    named in `keep` (``"\\n"``, ``"\\t"``, ``"\\n\\t"``) are kept, the others become a space."""
    text = _CONTROLS.sub("", _ESCAPES.sub("", text))
    return _LINE_BREAKS.sub(lambda m: m.group() if m.group() in keep else " ", text)


def clean_value(value: Any, *, keep: str = "\n\t", depth: int = MAX_DEPTH) -> Any:
    """`value` (what ``json.loads`` gives) with every string `clean`; objects and lists
    nested deeper than `depth` are replaced by ``TOO_DEEP``."""
    if isinstance(value, str):
        return clean(value, keep=keep)
    if isinstance(value, Mapping | list | tuple):
        if depth <= 0:
            return TOO_DEEP
        if isinstance(value, Mapping):
            return {
                clean(str(k)): clean_value(v, keep=keep, depth=depth - 1) for k, v in value.items()
            }
        return [clean_value(v, keep=keep, depth=depth - 1) for v in value]
    return value
