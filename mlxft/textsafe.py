"""Text from data made safe for a terminal: control characters, escape sequences and bidi overrides shown as visible escapes.

A benchmark prompt, a data column, an id or a run name can hold `ESC ]0;...BEL` (retitle the
window), `ESC [2J` (clear the screen), a C1 `CSI`, or a right-to-left override that makes a line
read differently from what it holds. Every piece of such text passes through `escape_controls`
before it is printed or written into a report a person reads; JSON printed to a terminal goes
through `dump_json`, which writes the same characters as JSON `\\uXXXX` escapes.

The rule: C0 controls (all of them, unless a layout keeps `\\n` or `\\t`), DEL, C1 controls, the
bidi embedding/override/isolate marks, the Unicode line and paragraph separators, and lone
surrogates (left by undecodable bytes; printing one raises) become `\\n`, `\\x1b`, `\\u202e`, `\\udcff`.
Everything else, any script or emoji, is printed as it is. The result holds none of those
characters, so escaping twice changes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache

# The characters that steer a terminal or reorder what it shows (see the module docstring).
_UNSAFE = (
    "\x00-\x1f\x7f-\x9f"  # C0, DEL, C1
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidi marks, embeddings, overrides, isolates
    "\u2028\u2029"  # line and paragraph separators
    "\ud800-\udfff"  # lone surrogates
)


@lru_cache(maxsize=8)
def _pattern(keep: str) -> re.Pattern:
    unsafe = re.compile(f"[{_UNSAFE}]")
    kept = "".join(c for c in keep if unsafe.match(c))
    return re.compile(f"(?![{re.escape(kept)}])[{_UNSAFE}]") if kept else unsafe


_SHORT = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _visible(match: re.Match) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_controls(text: str, keep: str = "") -> str:
    """`text` with every unsafe character written as a visible escape; characters in `keep` (e.g. "\\n") stay."""
    text = str(text)
    pattern = _pattern(keep)
    return pattern.sub(_visible, text) if pattern.search(text) else text


def escape_lines(lines: Iterable[str]) -> str:
    """A layout of one-line entries joined by newlines; a newline inside an entry shows as `\\n` and cannot forge a line."""
    return "\n".join(escape_controls(line) for line in lines)


def _json_escape(match: re.Match) -> str:
    return f"\\u{ord(match.group()):04x}"


def dump_json(value, **kwargs) -> str:
    """`json.dumps` that keeps other scripts readable (no ensure_ascii) and writes the unsafe characters as `\\uXXXX`.

    json.dumps escapes C0 itself; DEL, C1, bidi marks and lone surrogates it would print raw.
    Outside strings JSON is ASCII, so escaping them anywhere in the text keeps it valid JSON of the same value.
    """
    kwargs.setdefault("ensure_ascii", False)
    return _pattern("\n").sub(_json_escape, json.dumps(value, **kwargs))  # raw newlines there are only indentation
