"""The tester's sample input (the version's example, or a skeleton) and the code snippets
that call a model, filled in per model.

A batching function (published with ``--batch-max-size``) takes a list of inputs, so its
signature says nothing about what one call sends: its sample is one call's input, and its
snippets say so in a comment (:func:`one_input_note`)."""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from typing import Any

TOKEN_PLACEHOLDER = "YOUR_TOKEN"  # noqa: S105 - a placeholder the user replaces
_PARAMS = re.compile(r"^[^(]*\((.*)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Sample:
    """The body the tester and the snippets start from."""

    body: dict[str, Any]
    #: True for a skeleton built from the signature: its values must be edited first
    skeleton: bool


def sample_input(
    signature: str | None, example: dict[str, Any] | None = None, *, batching: bool = False
) -> Sample:
    """The version's ``example`` input, else a skeleton that fits ``signature``
    (``predict(x, y)``): each named argument set to null, or one positional null when the
    function takes only ``*args`` or nothing we can name.

    A batching function's skeleton is one call's input, an empty ``data`` object: its signature
    (``predict_batch(inputs)``) names the list of every call's input, not what one holds."""
    if example is not None:
        return Sample(example, skeleton=False)
    if batching:
        return Sample({"data": {}}, skeleton=True)
    match = _PARAMS.match(signature or "")
    names: list[str] = []
    if match:
        for part in match.group(1).split(","):
            name = part.split("=")[0].split(":")[0].strip()
            if name and not name.startswith("*") and name.isidentifier():
                names.append(name)
            elif name and not name.startswith("*") and re.match(r"^[A-Za-z.][\w.]*$", name):
                names.append(name)  # an R argument name such as 'x.y'
        if not names and not match.group(1).strip():
            return Sample({"parameters": []}, skeleton=False)  # it takes no arguments
    if names:
        return Sample({"data": dict.fromkeys(names)}, skeleton=True)
    return Sample({"parameters": [None]}, skeleton=True)


def one_input_note(function: str, *, r: bool = False) -> str:
    """What one call to the batching function ``function`` sends and gets back (``r``: an R
    function, which gets R lists)."""
    data = "a named list" if r else "a dict"
    return (
        f"{function} is a batching function: send one call's input. It gets this call's "
        f"data object ({data}) or parameters array (a list) as one element of its list of "
        "inputs, and the answer's result is this call's own result."
    )


def snippets(
    url: str, body: dict[str, Any], *, token_required: bool, note: str | None = None
) -> dict[str, str]:
    """curl, Python (requests), JavaScript (fetch) and R (httr) calls of ``url`` with ``body``,
    each after ``note`` as comment lines when there is one."""
    compact = json.dumps(body)
    pretty = json.dumps(body, indent=4)
    token = TOKEN_PLACEHOLDER
    hashed = _comment(note, "# ")
    curl = [hashed + f"curl -X POST '{url}'"]
    if token_required:
        curl.append(f"-u {token}:{token}")
    shell_body = compact.replace("'", "'\\''")
    curl += ["-H 'Content-Type: application/json'", f"-d '{shell_body}'"]
    python = ["import requests", "", hashed + "response = requests.post(", f'    "{url}",']
    python.append(f"    json={_indent(_python_literal(body), 4)},")
    if token_required:
        python.append(f'    auth=("{token}", "{token}"),')
    python += [")", "print(response.json())"]
    headers = ['"Content-Type": "application/json"']
    if token_required:
        headers.append(f'"Authorization": "Bearer {token}"')
    javascript = [
        _comment(note, "// ") + f'const response = await fetch("{url}", {{',
        '  method: "POST",',
        f"  headers: {{{', '.join(headers)}}},",
        f"  body: JSON.stringify({_indent(pretty, 2)}),",
        "});",
        "console.log(await response.json());",
    ]
    # an R string in single quotes: a backslash escapes the next character, so backslashes
    # first, then the quotes
    r_body = compact.replace("\\", "\\\\").replace("'", "\\'")
    r = [
        "library(httr)",
        "",
        hashed + "response <- POST(",
        f'  "{url}",',
    ]
    if token_required:
        r.append(f'  authenticate("{token}", "{token}", type = "basic"),')
    r += [
        f"  body = '{r_body}',",
        "  content_type_json()",
        ")",
        "str(content(response))",
    ]
    return {
        "curl": " \\\n     ".join(curl),
        "python": "\n".join(python),
        "javascript": "\n".join(javascript),
        "r": "\n".join(r),
    }


def _python_literal(value: Any, level: int = 0) -> str:
    """``value`` (parsed JSON) as Python source, laid out as ``json.dumps(indent=4)`` would lay
    it out, with Python's ``True``, ``False`` and ``None``."""
    pad = " " * 4 * (level + 1)
    if isinstance(value, dict) and value:
        items = [
            f"{pad}{_python_str(key)}: {_python_literal(item, level + 1)}"
            for key, item in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + " " * 4 * level + "}"
    if isinstance(value, list) and value:
        items = [pad + _python_literal(item, level + 1) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * 4 * level + "]"
    if isinstance(value, str):
        return _python_str(value)
    return repr(value)


def _python_str(text: str) -> str:
    """A Python string literal of ``text`` in double quotes, like the rest of the snippet: a
    JSON string's escapes mean the same in Python. A lone surrogate, which JSON would write as
    it is, gets Python's own repr."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return repr(text)
    return json.dumps(text, ensure_ascii=False)


def _comment(note: str | None, marker: str) -> str:
    """``note`` as comment lines that start with ``marker``, ending in a newline ("" for none)."""
    if not note:
        return ""
    return "".join(
        f"{line}\n"
        for line in textwrap.wrap(note, 88, initial_indent=marker, subsequent_indent=marker)
    )


def _indent(text: str, spaces: int) -> str:
    return text.replace("\n", "\n" + " " * spaces)
