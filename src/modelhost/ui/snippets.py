"""The tester's sample input and the code snippets that call a model, filled in per model."""

from __future__ import annotations

import json
import re
from typing import Any

TOKEN_PLACEHOLDER = "YOUR_TOKEN"  # noqa: S105 - a placeholder the user replaces
_PARAMS = re.compile(r"^[^(]*\((.*)\)\s*$", re.DOTALL)


def sample_input(signature: str | None) -> dict[str, Any]:
    """A body that fits ``signature`` (``predict(x, y)``): keyword arguments set to 0, or one
    positional argument when the function takes only ``*args`` or nothing we can name."""
    match = _PARAMS.match(signature or "")
    names: list[str] = []
    if match:
        for part in match.group(1).split(","):
            name = part.split("=")[0].split(":")[0].strip()
            if name and not name.startswith("*") and name.isidentifier():
                names.append(name)
            elif name and not name.startswith("*") and re.match(r"^[A-Za-z.][\w.]*$", name):
                names.append(name)  # an R argument name such as 'x.y'
    if names:
        return {"data": {name: 0 for name in names}}
    return {"parameters": [0]}


def snippets(url: str, body: dict[str, Any], *, token_required: bool) -> dict[str, str]:
    """curl, Python (requests), JavaScript (fetch) and R (httr) calls of ``url`` with ``body``."""
    compact = json.dumps(body)
    pretty = json.dumps(body, indent=4)
    token = TOKEN_PLACEHOLDER
    curl = [f"curl -X POST '{url}'"]
    if token_required:
        curl.append(f"-u {token}:{token}")
    shell_body = compact.replace("'", "'\\''")
    curl += ["-H 'Content-Type: application/json'", f"-d '{shell_body}'"]
    python = ["import requests", "", "response = requests.post(", f'    "{url}",']
    python.append(f"    json={_indent(pretty, 4)},")
    if token_required:
        python.append(f'    auth=("{token}", "{token}"),')
    python += [")", "print(response.json())"]
    headers = ['"Content-Type": "application/json"']
    if token_required:
        headers.append(f'"Authorization": "Bearer {token}"')
    javascript = [
        f'const response = await fetch("{url}", {{',
        '  method: "POST",',
        f"  headers: {{{', '.join(headers)}}},",
        f"  body: JSON.stringify({_indent(pretty, 2)}),",
        "});",
        "console.log(await response.json());",
    ]
    r_body = compact.replace("'", "\\'")
    r = [
        "library(httr)",
        "",
        "response <- POST(",
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


def _indent(text: str, spaces: int) -> str:
    return text.replace("\n", "\n" + " " * spaces)
