"""`--config FILE` on every command of the three stages: keys are the command's options, the
command line wins, repeatable options and `full` pools survive the trip through a results file."""

from __future__ import annotations

import json

import click
import click.testing
import pytest

from extract.store.cli_options import pool_list
from extract.store.config_files import read_config


def _commands():
    from analysis.cli import cli as analysis_cli
    from extract.cli import cli as extract_cli
    from probe.cli import cli as probe_cli

    for group in (extract_cli, probe_cli, analysis_cli):
        for name, command in group.commands.items():
            yield f"{group.name} {name}", command


def test_every_command_takes_a_config_file():
    missing = [name for name, command in _commands() if not any(p.name == "config" for p in command.params)]
    assert not missing, missing


def test_a_config_sets_defaults_and_the_command_line_wins(tmp_path, capsys):
    from extract.cli import main

    (tmp_path / "c.toml").write_text('model = "tiny"\n')
    with pytest.raises(SystemExit) as done:
        main(["blocks", "--config", str(tmp_path / "c.toml")])
    assert done.value.code == 0
    tiny = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["blocks", "--config", str(tmp_path / "c.toml"), "--model", "demo-fmnist"])
    demo = capsys.readouterr().out
    assert tiny != demo and len(demo.splitlines()) == 38  # demo-fmnist: a header and 37 blocks


def test_repeatable_options_and_full_pools_come_back_from_a_results_file(tmp_path):
    """A results file's invocation holds resolved values ((10, 50), (2, None)); read back as a
    config they are the words the options parse, so `--config results.json` reruns the run."""
    from extract.store.config_files import _load

    (tmp_path / "r.json").write_text(
        json.dumps(
            {
                "invocation": {
                    "command": "python -m probe train",
                    "options": {"ts": [10, 50], "pools": [2, None], "progress": False, "name": None},
                }
            }
        )
    )

    @click.command()
    @click.option("-t", "ts", multiple=True)
    @click.option("--pool", "pools", multiple=True, callback=pool_list)
    @click.option("--progress/--no-progress", default=True)
    @click.option("--name")
    def cmd(ts, pools, progress, name):
        click.echo(json.dumps([list(ts), list(pools), progress, name]))

    cmd.params.insert(0, click.Option(["--config"], is_eager=True, expose_value=False, callback=_load))
    out = click.testing.CliRunner().invoke(cmd, ["--config", str(tmp_path / "r.json")])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == [["10", "50"], [2, None], False, None]


def test_config_files_read_as_toml_yaml_and_json(tmp_path):
    (tmp_path / "a.toml").write_text("epochs = 3\nlr = [0.1, 0.01]\n")
    (tmp_path / "a.yaml").write_text("epochs: 3\nlr: [0.1, 0.01]\n")
    (tmp_path / "a.json").write_text('{"epochs": 3, "lr": [0.1, 0.01]}')
    assert (
        read_config(tmp_path / "a.toml")
        == read_config(tmp_path / "a.yaml")
        == read_config(tmp_path / "a.json")
        == {"epochs": 3, "lr": [0.1, 0.01]}
    )
    (tmp_path / "a.ini").write_text("x")
    with pytest.raises(ValueError, match="a config file ends in .toml"):
        read_config(tmp_path / "a.ini")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="holds option = value pairs"):
        read_config(tmp_path / "list.yaml")
