"""Git action references and the actions configuration: parsing, refusals, precedence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from gitfixtures import isolate

from flowray.actions import ActionError, ActionsConfig, is_git_ref, load_config, parse_ref


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)


CFG = ActionsConfig(base="https://github.com", cache_dir="/unused")


def error(value: object, config: ActionsConfig = CFG) -> str:
    with pytest.raises(ActionError) as info:
        parse_ref(value, config)  # type: ignore[arg-type]
    return str(info.value)


def test_string_form_maps_owner_and_builds_url() -> None:
    ref = parse_ref("datatorch/python@v1", CFG)
    assert (ref.name, ref.repo, ref.tag, ref.url, ref.file, ref.subdir) == (
        "datatorch/python", "datatorch-actions/python", "v1",
        "https://github.com/datatorch-actions/python", None, None,
    )
    assert ref.key == "https://github.com/datatorch-actions/python @v1"
    assert ref.display() == "datatorch/python@v1"
    other = parse_ref("acme/tool@v2.1.0", ActionsConfig(base="git://host:9418/"))
    assert other.url == "git://host:9418/acme/tool"
    assert other.display() == "acme/tool@v2.1.0"


def test_latest_and_no_tag_mean_default_branch() -> None:
    for text in ("acme/tool", "acme/tool@latest"):
        ref = parse_ref(text, CFG)
        assert ref.tag is None
        assert ref.key == "https://github.com/acme/tool @latest"
        assert ref.display() == "acme/tool"


def test_sub_folder_and_file_are_part_of_the_key() -> None:
    a = parse_ref("acme/tools/lint/py@v1", CFG)
    assert (a.repo, a.subdir, a.display()) == ("acme/tools", "lint/py", "acme/tools/lint/py@v1")
    assert a.key == "https://github.com/acme/tools @v1 path=lint/py"
    b = parse_ref({"name": "acme/tools", "tag": "v1", "file": "./conf/action.yaml"}, CFG)
    assert b.file == "conf/action.yaml"
    assert b.key == "https://github.com/acme/tools @v1 file=conf/action.yaml"
    assert len({a.key, b.key, parse_ref("acme/tools@v1", CFG).key}) == 3


def test_object_form_with_git_url_is_shown_without_credentials() -> None:
    ref = parse_ref(
        {"name": "acme/tool", "tag": "v3", "git": "https://bob:s3cret@git.example.com/x/tool.git"},
        CFG,
    )
    assert ref.url == "https://bob:s3cret@git.example.com/x/tool.git"
    assert ref.display() == "https://git.example.com/x/tool.git@v3"
    assert ref.key == "https://git.example.com/x/tool @v3"
    assert "s3cret" not in repr(ref) and "bob" not in repr(ref)
    assert parse_ref({"name": "acme/tool", "git": "git@github.com:acme/tool.git"}, CFG).tag is None


def test_is_git_ref() -> None:
    assert is_git_ref("owner/repo@v1")
    assert is_git_ref({"name": "owner/repo"})
    assert not is_git_ref("./local/action")
    assert not is_git_ref("docker://alpine:3")
    assert not is_git_ref(3)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("--upload-pack=touch x/y@v1",
         "invalid action '--upload-pack=touch x/y@v1': a name must not start with '-'"),
        ("owner/repo@--upload-pack=touch /tmp/pwned",
         "invalid action 'owner/repo@--upload-pack=touch /tmp/pwned': a tag must not start with '-'"),
        ("owner/repo@", "invalid action 'owner/repo@': the tag after '@' is empty"),
        ("owner/../etc@v1", "invalid action 'owner/../etc@v1': a name must not contain '.' or '..' parts"),
        ("owner/repo/../../x@v1",
         "invalid action 'owner/repo/../../x@v1': a name must not contain '.' or '..' parts"),
        ("/etc/passwd@v1", "invalid action '/etc/passwd@v1': a name must be owner/repo, not an absolute path"),
        ("../x/y", "invalid action '../x/y': a name must not contain '.' or '..' parts"),
        ("repo@v1", "invalid action 'repo@v1': expected owner/repo"),
        ("owner//repo", "invalid action 'owner//repo': a name must not have empty parts ('//' or a trailing '/')"),
        ("own er/repo", "invalid action 'own er/repo': 'own er' may hold only letters, digits, '_', '.' and '-' (and must not start with '-')"),
        ("owner/repo@v1..v2", "invalid action 'owner/repo@v1..v2': a tag must not contain '..'"),
        ("owner/repo@v 1", "invalid action 'owner/repo@v 1': 'v 1' is not a valid git tag or branch name"),
        ("owner/repo@v1^{}", "invalid action 'owner/repo@v1^{}': 'v1^{}' is not a valid git tag or branch name"),
        ("https://bob:s3cret@host/x@v1",
         "invalid action 'https://host/x@v1': 'https:' may hold only letters, digits, '_', '.' and '-' (and must not start with '-')"),
        ("./local", "invalid action './local': not a git action"),
    ],
)
def test_string_refusals(value: str, message: str) -> None:
    assert error(value) == message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"name": "a/b", "tag": "--upload-pack=x"},
         "invalid action {name: a/b, tag: --upload-pack=x}: a tag must not start with '-'"),
        ({"name": "--upload-pack=x/y"},
         "invalid action {name: --upload-pack=x/y}: a name must not start with '-'"),
        ({"name": "a/b", "git": "--upload-pack=touch /tmp/x"},
         "invalid action {name: a/b, git: --upload-pack=touch /tmp/x}: a git URL must not start with '-' ('--upload-pack=touch /tmp/x')"),
        ({"name": "a/b", "git": "ext::sh -c touch% /tmp/pwned"},
         "invalid action {name: a/b, git: ext::sh -c touch% /tmp/pwned}: a git URL must not contain spaces or control characters ('ext::sh -c touch% /tmp/pwned')"),
        ({"name": "a/b", "git": "ext::sh"},
         "invalid action {name: a/b, git: ext::sh}: git transports like 'ext::' are not allowed ('ext::sh')"),
        ({"name": "a/b", "git": "ftp://host/x"},
         "invalid action {name: a/b, git: ftp://host/x}: unsupported git URL scheme 'ftp' in 'ftp://host/x' (expected https://, http://, git://, ssh://, git+ssh://, ssh+git://, file://)"),
        ({"name": "a/b", "git": "relative/path"},
         "invalid action {name: a/b, git: relative/path}: 'relative/path' is not a git URL (expected https://, git://, ssh://, file://, user@host:path or an absolute path)"),
        ({"name": "a/b", "file": "../../etc/passwd"},
         "invalid action {name: a/b, file: ../../etc/passwd}: 'file' must not leave the repository ('../../etc/passwd')"),
        ({"name": "a/b", "file": "sub/../../x.yaml"},
         "invalid action {name: a/b, file: sub/../../x.yaml}: 'file' must not leave the repository ('sub/../../x.yaml')"),
        ({"name": "a/b", "file": "/etc/passwd"},
         "invalid action {name: a/b, file: /etc/passwd}: 'file' must be a path inside the repository, not the absolute path '/etc/passwd'"),
        ({"name": "a/b", "file": "-x"},
         "invalid action {name: a/b, file: -x}: 'file' must not start with '-'"),
        ({"name": "a/b", "tag": ""}, "invalid action {name: a/b, tag: }: the tag is empty"),
        ({"name": "a/b", "tag": 1}, "invalid action {name: a/b, tag: 1}: 'tag' must be a string, not int"),
        ({"tag": "v1"}, "invalid action {tag: v1}: 'name' is required (owner/repo)"),
        ({"name": "a/b", "branch": "x"},
         "invalid action {name: a/b, branch: x}: unknown key 'branch' (expected name, tag, git, file)"),
        ({"name": "a/b", "tag": "v1", "git": "https://bob:s3cret@host:1/x.git", "file": "../x"},
         "invalid action {name: a/b, tag: v1, git: https://host:1/x.git, file: ../x}: 'file' must not leave the repository ('../x')"),
    ],
)
def test_object_refusals(value: dict[str, object], message: str) -> None:
    assert error(value) == message


def test_not_a_reference() -> None:
    assert error(["a/b"]) == (
        "invalid action ['a/b']: expected 'owner/repo@tag' or a map with name, tag, git, file"
    )


# -- configuration


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWRAY_CACHE_DIR")
    cfg = load_config(str(tmp_path))
    assert cfg == ActionsConfig(
        base="https://github.com", owners={"datatorch": "datatorch-actions"},
        cache_dir=str(tmp_path / "xdg-cache" / "flowray" / "actions"), offline=False,
        system_site_packages=False,
    )


def test_precedence_env_over_workspace_over_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOWRAY_CACHE_DIR")
    ws = tmp_path / "ws"
    write(tmp_path / "xdg-config" / "flowray" / "flowray.toml",
          '[actions]\nbase = "https://user.example"\noffline = true\ncache-dir = "c"\n'
          '[actions.owners]\nacme = "acme-actions"\ndatatorch = "dt-mirror"\n')
    cfg = load_config(str(ws))
    assert (cfg.base, cfg.offline, cfg.cache_dir) == (
        "https://user.example", True, str(tmp_path / "xdg-config" / "flowray" / "c"))
    assert cfg.owners == {"datatorch": "dt-mirror", "acme": "acme-actions"}
    write(ws / "flowray.toml",
          '[actions]\nbase = "file:///srv/git"\noffline = false\nsystem-site-packages = true\n'
          '[actions.owners]\nacme = "acme-ws"\n')
    cfg = load_config(str(ws))
    assert (cfg.base, cfg.offline, cfg.system_site_packages) == ("file:///srv/git", False, True)
    assert cfg.owners == {"datatorch": "dt-mirror", "acme": "acme-ws"}
    monkeypatch.setenv("FLOWRAY_ACTIONS_BASE", "git://127.0.0.1:9418")
    monkeypatch.setenv("FLOWRAY_OFFLINE", "1")
    monkeypatch.setenv("FLOWRAY_CACHE_DIR", str(tmp_path / "envcache"))
    monkeypatch.setenv("FLOWRAY_ACTIONS_SYSTEM_SITE_PACKAGES", "0")
    cfg = load_config(str(ws))
    assert (cfg.base, cfg.offline, cfg.cache_dir, cfg.system_site_packages) == (
        "git://127.0.0.1:9418", True, str(tmp_path / "envcache"), False)
    assert load_config(str(ws), offline=False).offline is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[actions\n", "invalid TOML: Expected ']' at the end of a table declaration (at line 1, column 9)"),
        ("actions = 3\n", "'actions' must be a table ([actions])"),
        ("[actions]\noffline = 'yes'\n", "actions.offline must be true or false, not 'yes'"),
        ("[actions]\nbase = 3\n", "actions.base must be a string, not 3"),
        ("[actions]\nbase = '--upload-pack=x'\n",
         "actions.base: a git URL must not start with '-' ('--upload-pack=x')"),
        ("[actions]\nofline = true\n", "unknown key 'actions.ofline'; did you mean 'offline'?"),
        ("[actions]\ncache-dir = []\n", "actions.cache-dir must be a folder name, not an array"),
        ("[actions.owners]\ndatatorch = 1\n", "actions.owners.datatorch must be a string, not 1"),
        ("[actions.owners]\ndatatorch = '../x'\n",
         "actions.owners.datatorch: an owner must not contain '.' or '..' parts"),
        ("[actions]\nowners = 'x'\n", "actions.owners must be a table ([actions.owners]), not 'x'"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "ws" / "flowray.toml"
    write(path, text)
    with pytest.raises(ActionError) as info:
        load_config(str(tmp_path / "ws"))
    assert str(info.value) == f"{path}: {message}"


def test_bad_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWRAY_OFFLINE", "maybe")
    with pytest.raises(ActionError) as info:
        load_config(str(tmp_path))
    assert str(info.value) == "FLOWRAY_OFFLINE must be 1 or 0, not 'maybe'"
    monkeypatch.delenv("FLOWRAY_OFFLINE")
    monkeypatch.setenv("FLOWRAY_ACTIONS_BASE", "ext::sh")
    with pytest.raises(ActionError) as info:
        load_config(str(tmp_path))
    assert str(info.value) == (
        "FLOWRAY_ACTIONS_BASE: git transports like 'ext::' are not allowed ('ext::sh')"
    )


def test_importing_the_package_does_not_import_gitpython() -> None:
    code = (
        "import sys, flowray.actions, flowray.actions.git, flowray.actions.venv\n"
        "print(sorted(m for m in sys.modules if m == 'git' or m.startswith('git.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
