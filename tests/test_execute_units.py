"""Unit tests of the executor's small parts: output parsing, masking, shell rendering, matrix."""

from __future__ import annotations

import subprocess

import pytest

from flowray.execute.outputs import OutputError, parse_output_file, parse_output_line
from flowray.execute.secrets import Masker
from flowray.execute.shell import ShellTemplateError, render_script
from flowray.plan.graph import CycleError, topological_order
from flowray.spec.graph import find_cycle
from flowray.spec.matrix import expand_matrix


def test_output_lines() -> None:
    assert parse_output_line("::sum::30") == ("sum", 30)
    assert parse_output_line("::name::some text") == ("name", "some text")
    assert parse_output_line('::obj::{"a": [1]}') == ("obj", {"a": [1]})
    assert parse_output_line("::x-y_z::true") == ("x-y_z", True)
    assert parse_output_line("::bad name::1") is None
    assert parse_output_line("no output") is None
    assert parse_output_line(":: ::") is None


def test_output_file_forms_and_errors() -> None:
    text = "a=1\nb=x=y\n\nm<<END\nline1\n\nline3\nEND\nc=\n"
    assert parse_output_file(text) == {"a": "1", "b": "x=y", "m": "line1\n\nline3", "c": ""}
    with pytest.raises(OutputError) as e1:
        parse_output_file("m<<END\nnever closed\n")
    assert str(e1.value) == "output 'm': no closing line 'END'"
    with pytest.raises(OutputError) as e2:
        parse_output_file("just words\n")
    assert str(e2.value) == (
        "line 1 of $FLOWRAY_OUTPUT is not 'name=value' or 'name<<DELIMITER': 'just words'")
    with pytest.raises(OutputError) as e3:
        parse_output_file("9bad=1\n")
    assert str(e3.value) == "'9bad' is not a valid output name"


def test_masker_masks_value_and_base64_longest_first() -> None:
    m = Masker(["hunter22", "hunter"])
    assert m.text("pw hunter22 and hunter") == "pw *** and ***"
    assert m.text("b64 aHVudGVyMjI= and aHVudGVyMjI") == "b64 *** and ***"
    assert m.data({"k": ["hunter22", 3]}) == {"k": ["***", 3]}
    assert not Masker([""])


@pytest.mark.parametrize(
    ("script", "expected_shell_output"),
    [
        ("echo ${{ steps.a.outputs.v }}", "$(id) ' \" `x`"),
        ('echo "${{ steps.a.outputs.v }}"', "$(id) ' \" `x`"),
        ("echo '${{ steps.a.outputs.v }}'", "$(id) ' \" `x`"),
        ("echo $'${{ steps.a.outputs.v }}'", "$(id) ' \" `x`"),
        ("echo a\\'${{ steps.a.outputs.v }}", "a'$(id) ' \" `x`"),
        ("# it's a comment\necho ${{ steps.a.outputs.v }}", "$(id) ' \" `x`"),
    ],
)
def test_untrusted_templates_stay_data_in_every_quoting(script: str,
                                                        expected_shell_output: str) -> None:
    ctx = {"steps": {"a": {"outputs": {"v": "$(id) ' \" `x`"}}}}
    rendered, env = render_script(script, ctx, posix=True)
    out = subprocess.run(["bash", "-c", rendered], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out == expected_shell_output + "\n"


@pytest.mark.parametrize("heredoc", ["<<EOF", "<<'EOF'", "<<-EOF"])
def test_untrusted_value_in_a_heredoc_is_refused(heredoc: str) -> None:
    ctx = {"steps": {"a": {"outputs": {"v": "x\nEOF\nid"}}}}
    with pytest.raises(ShellTemplateError) as err:
        render_script(f"cat {heredoc}\n${{{{ steps.a.outputs.v }}}}\nEOF", ctx, posix=True)
    assert str(err.value) == (
        "'${{ steps.a.outputs.v }}' (line 2 of the script) reads data from outside the flow and "
        "stands in a here-document, whose text is the input of a command (often a program's "
        "code, as in 'python3 - <<EOF'): flowray cannot pass it there safely; set it in the "
        "step's 'env:' and have the command read the environment variable "
        "(os.environ[\"NAME\"] in Python, \"$NAME\" in a shell)")


def test_trusted_templates_are_spliced() -> None:
    rendered, env = render_script("${{ matrix.cmd }} --x ${{ variables.n }}",
                                  {"matrix": {"cmd": "echo hi"}, "variables": {"n": 3}},
                                  posix=True)
    assert rendered == "echo hi --x 3" and env == {}


def test_matrix_expansion_rules() -> None:
    cells = expand_matrix({
        "a": [1, 2], "b": ["x", "y"],
        "exclude": [{"a": 2, "b": "y"}],
        "include": [{"a": 1, "c": "extra"}, {"a": 3, "b": "z"}, {"b": "x", "d": 4}],
    })
    assert cells == [
        {"a": 1, "b": "x", "c": "extra", "d": 4},
        {"a": 1, "b": "y", "c": "extra"},
        {"a": 2, "b": "x", "d": 4},
        {"a": 3, "b": "z"},
    ]
    assert expand_matrix({"include": [{"k": 1}, {"k": 2}]}) == [{"k": 1}, {"k": 2}]


def test_cycles_are_named_and_order_is_stable() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": [], "b": ["a"]}) is None
    with pytest.raises(CycleError) as err:
        topological_order({"x": ["y"], "y": ["x"]})
    assert str(err.value) == "jobs form a cycle through 'needs': x -> y -> x"
    assert topological_order({"c": ["a", "b"], "b": ["a"], "a": []}) == ["a", "b", "c"]


def test_non_posix_shell_refuses_untrusted_templates_at_run_time_too() -> None:
    with pytest.raises(ShellTemplateError) as err:
        render_script('print("${{ steps.a.outputs.v }}")',
                      {"steps": {"a": {"outputs": {"v": "x"}}}}, posix=False)
    assert str(err.value) == (
        "'${{ steps.a.outputs.v }}' reads data from outside the flow and this step's shell is "
        "not a POSIX shell, so it cannot be passed safely inside the script; set it in the "
        "step's 'env:' and read the environment variable instead")
    assert render_script("print(${{ matrix.n }})", {"matrix": {"n": 2}}, posix=False) == (
        "print(2)", {})
