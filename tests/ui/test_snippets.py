"""The tester's sample input and the code snippets."""

from __future__ import annotations

import ast
import json
import re
import subprocess
from pathlib import Path

import pytest

from modelhost.ui.snippets import TOKEN_PLACEHOLDER, one_input_note, sample_input, snippets

URL = "http://127.0.0.1:8000/models/calc/latest/model"
RSCRIPT = "/usr/bin/Rscript"  # Debian's r-base-core, as the R integration tests use


@pytest.mark.parametrize(
    ("signature", "sample"),
    [
        ("add(x, y)", {"data": {"x": None, "y": None}}),
        ("predict(features)", {"data": {"features": None}}),
        ("f(x, y=2, *args, **kwargs)", {"data": {"x": None, "y": None}}),
        ("f(x: int, y: float = 1.0)", {"data": {"x": None, "y": None}}),
        ("predictQuality(features, n.trees)", {"data": {"features": None, "n.trees": None}}),
        ("f(*args)", {"parameters": [None]}),
        (None, {"parameters": [None]}),
    ],
)
def test_without_an_example_the_sample_is_a_skeleton_of_the_signature_marked_for_edits(
    signature: str | None, sample: dict[str, object]
) -> None:
    found = sample_input(signature)
    assert found.body == sample
    assert found.skeleton is True


def test_a_function_without_arguments_gets_an_empty_parameters_array_to_send_as_it_is() -> None:
    found = sample_input("f()")
    assert found.body == {"parameters": []}
    assert found.skeleton is False


def test_the_versions_example_is_the_sample_as_it_is() -> None:
    example = {"parameters": [[5.6, 0.615, 0, 1.6]]}
    found = sample_input("predict(features)", example)
    assert found.body == example
    assert found.skeleton is False


def test_a_batching_functions_sample_without_an_example_is_one_empty_data_object_to_fill() -> None:
    # predict_batch(inputs) names the list of every call's input: {"data": {"inputs": null}}
    # would send {"inputs": None} as one input, so the sample is one input to fill in
    found = sample_input("predict_batch(inputs)", batching=True)
    assert found.body == {"data": {}}
    assert found.skeleton is True


def test_a_batching_functions_example_is_its_sample_as_it_is() -> None:
    example = {"parameters": [[5.6, 0.615, 0, 1.6]]}
    found = sample_input("predict_batch(inputs)", example, batching=True)
    assert found.body == example
    assert found.skeleton is False


def _comments(code: str, marker: str) -> str:
    """The snippet's comment lines before the code, as one line of text."""
    lines = [line for line in code.splitlines() if line.startswith(marker)]
    return " ".join(line.removeprefix(marker) for line in lines)


@pytest.mark.parametrize("r", [False, True])
def test_each_snippet_of_a_batching_function_says_its_body_is_one_input_of_the_list(
    r: bool,
) -> None:
    body = {"parameters": [[5.6, 0.615]]}
    code = snippets(URL, body, token_required=True, note=one_input_note("predict_batch", r=r))
    element = "a named list" if r else "a dict"
    for key, marker in [("curl", "# "), ("python", "# "), ("javascript", "// "), ("r", "# ")]:
        said = _comments(code[key], marker)
        assert said.startswith("predict_batch is a batching function: send one call's input."), key
        assert f"data object ({element}) or parameters array (a list)" in said, key
        assert "one element of its list of inputs" in said, key
        assert "the answer's result is this call's own result" in said, key
        assert all(len(line) <= 88 for line in code[key].splitlines() if line.startswith(marker))
    compile(code["python"], "snippet.py", "exec")
    assert ast.literal_eval(_call_keyword(code["python"], "json")) == body
    assert """-d '{"parameters": [[5.6, 0.615]]}'""" in code["curl"]
    check = subprocess.run(["bash", "-n", "-c", code["curl"]], capture_output=True, check=False)
    assert check.returncode == 0, check.stderr


def test_a_plain_functions_snippets_have_no_comment() -> None:
    code = snippets(URL, {"data": {"x": 1}}, token_required=False)
    assert code["curl"].startswith("curl -X POST")
    assert code["javascript"].startswith("const response")
    assert not any(line.startswith("#") for line in code["python"].splitlines())
    assert not any(line.startswith("#") for line in code["r"].splitlines())


def test_the_snippets_of_a_public_model_carry_no_token() -> None:
    code = snippets(URL, {"data": {"x": 1}}, token_required=False)
    assert set(code) == {"curl", "python", "javascript", "r"}
    assert all(URL in text for text in code.values())
    assert all(TOKEN_PLACEHOLDER not in text for text in code.values())
    assert """-d '{"data": {"x": 1}}'""" in code["curl"]
    assert "requests.post(" in code["python"]
    assert "await fetch(" in code["javascript"]
    assert "library(httr)" in code["r"]


def test_the_snippets_of_a_token_model_show_where_the_token_goes() -> None:
    code = snippets(URL, {"data": {"x": 1}}, token_required=True)
    assert f"-u {TOKEN_PLACEHOLDER}:{TOKEN_PLACEHOLDER}" in code["curl"]
    assert f'auth=("{TOKEN_PLACEHOLDER}", "{TOKEN_PLACEHOLDER}")' in code["python"]
    assert f'"Authorization": "Bearer {TOKEN_PLACEHOLDER}"' in code["javascript"]
    assert 'type = "basic"' in code["r"]


def test_a_single_quote_in_the_body_cannot_break_out_of_the_shell_string() -> None:
    code = snippets(URL, {"data": {"name": "O'Brien"}}, token_required=False)
    assert """'{"data": {"name": "O'\\''Brien"}}'""" in code["curl"]
    assert json.loads(json.dumps({"data": {"name": "O'Brien"}}))


TRICKY: dict[str, object] = {
    "data": {
        "t": True,
        "f": False,
        "n": None,
        "unicode": "é✓ 😀",
        "quotes": """it's a "q" \\ done $HOME `id`""",
        "lines": "one\ntwo\ttab",
        "numbers": [1, -2.5, 1e100, []],
        "empty": {},
    }
}


def _call_keyword(source: str, name: str) -> ast.expr:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.keyword) and node.arg == name:
            return node.value
    raise AssertionError(f"no {name}= in {source}")


@pytest.mark.parametrize("body", [TRICKY, {"data": {"x": None, "y": None}}])
def test_the_python_snippet_is_python_whose_json_argument_is_the_body(
    body: dict[str, object],
) -> None:
    code = snippets(URL, body, token_required=True)["python"]
    compile(code, "snippet.py", "exec")
    assert ast.literal_eval(_call_keyword(code, "json")) == body


def test_the_r_snippet_sends_the_body_as_json_whatever_quotes_and_backslashes_it_holds(
    tmp_path: Path,
) -> None:
    code = snippets(URL, TRICKY, token_required=False)["r"]
    literal = re.search(r"^  body = ('.*'),$", code, re.MULTILINE)
    assert literal is not None, code
    script = tmp_path / "body.R"
    script.write_text(
        f"body <- {literal.group(1)}\nstopifnot(jsonlite::validate(body))\ncat(body)\n"
    )
    run = subprocess.run(
        [RSCRIPT, "--vanilla", str(script)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == json.dumps(TRICKY)
