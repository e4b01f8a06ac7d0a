"""The command line's flag forms: Go's (`-flag`, `-flag=BOOL`, `-help`) as TaskRunner's scripts
write them, click's, help on every command, suggestions among visible options only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from taskrunner.cli import cli
from taskrunner.cli.flags import GO_FALSE, GO_TRUE
from taskrunner.cli.run import run

# Go's strconv.ParseBool: exactly these, nothing else (no "yes", no "tRUE")
GO_PARSE_BOOL = {"1", "t", "T", "true", "TRUE", "True", "0", "f", "F", "false", "FALSE", "False"}


def parsed(*args: str) -> dict[str, Any]:
    """`taskrunner run ARGS` parsed into its options, without running."""
    with run.make_context("run", list(args), help_option_names=["-h", "--help"]) as ctx:
        return dict(ctx.params)


def invoke(*args: str, env: dict[str, str] | None = None) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args), env=env, prog_name="taskrunner")


def all_commands() -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = [("taskrunner", cli)]
    pending = [("taskrunner", cli)]
    while pending:
        path, group = pending.pop()
        assert isinstance(group, click.Group)
        for name, command in group.commands.items():
            found.append((f"{path} {name}", command))
            if isinstance(command, click.Group):
                pending.append((f"{path} {name}", command))
    return found


def test_go_true_and_false_are_parse_bool() -> None:
    assert GO_TRUE | GO_FALSE == GO_PARSE_BOOL and not GO_TRUE & GO_FALSE


@pytest.mark.parametrize("value", sorted(GO_PARSE_BOOL))
@pytest.mark.parametrize("dashes", ["-", "--"])
def test_bool_flags_take_every_parse_bool_value(dashes: str, value: str) -> None:
    want = value in GO_TRUE
    assert parsed(f"{dashes}task-mode={value}")["task_mode"] is want
    assert parsed(f"{dashes}colorful-tty={value}")["colorful_tty"] is want
    assert parsed(f"{dashes}no-default-channels={value}")["default_channels"] is not want


def test_bool_flags_alone_and_go_value_flags() -> None:
    opts = parsed("-task-mode", "-colorful-tty", "-redis-host", "10.0.0.1:6380", "-concurrent=3")
    assert (opts["task_mode"], opts["colorful_tty"]) == (True, True)
    assert (opts["redis_host"], opts["concurrent"]) == ("10.0.0.1:6380", 3)
    assert parsed("--no-task-mode", "--shell=0")["task_mode"] is False


def test_a_value_that_looks_like_an_option_is_left_alone() -> None:
    """`-channel-default -help`: the value of a flag that takes one is not rewritten."""
    assert parsed("-channel-default", "-weird")["channel_default"] == "-weird"


def test_env_var_is_overridden_by_bool_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKRUNNER_SHELL", "1")
    assert parsed()["shell"] is True
    assert parsed("-shell=false")["shell"] is False


@pytest.mark.parametrize("value", ["yes", "no", "on", "tRUE", "2", ""])
def test_a_bool_value_go_refuses_exits_2_naming_the_forms(value: str) -> None:
    result = invoke("run", f"-task-mode={value}")
    assert result.exit_code == 2
    assert f"{value!r} is not a boolean" in result.output and "TRUE" in result.output


@pytest.mark.parametrize("value", ["false", "0", "true"])
def test_bool_flag_followed_by_a_word_says_to_use_equals(value: str) -> None:
    """Go's flag package reads `-task-mode false` as -task-mode=true plus an argument."""
    result = invoke("run", "-task-mode", value)
    assert result.exit_code == 2
    assert f"write -task-mode={value}" in result.output, result.output


@pytest.mark.parametrize("help_flag", ["-h", "--help", "-help"])
def test_help_forms_on_every_command(help_flag: str) -> None:
    for path, _ in all_commands():
        words = path.split()[1:]
        result = invoke(*words, help_flag)
        assert result.exit_code == 0, (path, result.output)
        assert result.output.startswith(f"Usage: {path}"), (path, result.output)


def test_task_runner_entry_takes_dash_help(capsys: pytest.CaptureFixture[str]) -> None:
    from taskrunner.cli import task_runner_main

    with pytest.raises(SystemExit) as exited:
        task_runner_main(["-help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("Usage: taskrunner run")


def test_every_option_of_every_command_has_help_text() -> None:
    missing = [
        f"{path} {param.opts[0]}"
        for path, command in all_commands()
        for param in command.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    assert not missing, missing


@pytest.mark.parametrize(
    ("args", "suggested", "hidden"),
    [
        (["run", "--hots", "x"], None, "--host"),
        (["run", "--passwrd", "x"], "--redis-password", "--password"),
        (["run", "-redis-hots", "x"], "--redis-host", "--host"),
        (["push", "--jsn", "x"], "--json", None),
    ],
)
def test_a_mistyped_option_suggests_a_visible_option_only(
    args: list[str], suggested: str | None, hidden: str | None
) -> None:
    result = invoke(*args)
    assert result.exit_code == 2 and "No such option" in result.output
    if suggested is not None:
        assert suggested in result.output, result.output
    if hidden is not None:
        assert f"'{hidden}'" not in result.output, result.output


def test_no_default_channels_from_env_and_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert parsed()["default_channels"] is True
    assert parsed("--no-default-channels")["default_channels"] is False
    assert parsed("-default-channels=false")["default_channels"] is False
    monkeypatch.setenv("TASKRUNNER_DEFAULT_CHANNELS", "false")
    assert parsed()["default_channels"] is False
    monkeypatch.delenv("TASKRUNNER_DEFAULT_CHANNELS")
    config = tmp_path / "taskrunner.toml"
    config.write_text("default_channels = false\n")
    assert parsed("--config", str(config))["default_channels"] is False
    help_text = invoke("run", "--help").output
    assert "--no-default-channels" in help_text and "always created" in help_text
