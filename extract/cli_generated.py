"""Commands whose options are generated when they run, from the words they are given: `extract
run --model NAME` takes the shared options and that model family's own, and its --help shows
those. The options come from config dataclasses (extract.store.cli_options.config_options), and
are built only when the command runs or shows its help, so `python -m extract` loads no
family's module to list its commands."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from extract.store.config_files import read_config

HELP_FLAGS = ("-h", "--help")


class GeneratedCommand(click.Command):
    """`params` holds the options every form of the command takes (--config); `more(args)`
    gives the others for these words. Each run parses with a command of both. `forms()`: the
    words of every form (e.g. one `--model NAME` per family), so that an option of another
    form is named in one line (`-t: not an option of torchvision:resnet50`), not just refused;
    `subject(args)` names the form these words take."""

    def __init__(
        self,
        name: str,
        more: Callable[[list[str]], list[click.Parameter]],
        forms: Callable[[], list[list[str]]] = list,
        subject: Callable[[list[str]], str] = lambda args: "this command",
        **kwargs,
    ):
        super().__init__(name, **kwargs)
        self.more, self.forms, self.subject = more, forms, subject

    def make_context(self, info_name, args, parent=None, **extra):
        params = [*self.params, *self.more(list(args))]
        stray = self._stray(list(args), params)
        if stray:
            what = "an option" if len(stray) == 1 else "options"
            click.echo(
                f"error: {', '.join(stray)}: not {what} of {self.subject(list(args))}; leave them out",
                err=True,
            )
            raise click.exceptions.Exit(2)
        command = click.Command(
            self.name,
            params=params,
            callback=self.callback,
            help=self.help,
            short_help=self.short_help,
            context_settings=self.context_settings,
            add_help_option=self.add_help_option,
        )
        return command.make_context(info_name, args, parent, **extra)

    def _stray(self, args: list[str], params: list[click.Parameter]) -> list[str]:
        """The options among the words that another form of the command takes and this one
        does not, each by its longest name; an option no form takes is left to click."""
        own = _takes_value(params)
        others: dict[str, tuple[bool, str]] | None = None
        stray, i = [], 0
        while i < len(args):
            word = args[i].partition("=")[0]
            i += 1
            if not word.startswith("-") or word == "-" or word == "--":
                continue
            if word in own:
                i += own[word][0] and "=" not in args[i - 1]
                continue
            if others is None:
                others = {k: v for form in self.forms() for k, v in _takes_value(self.more(form)).items()}
            if word in others:
                stray.append(others[word][1])
                i += others[word][0] and "=" not in args[i - 1]
        return list(dict.fromkeys(stray))


def _takes_value(params: list[click.Parameter]) -> dict[str, tuple[bool, str]]:
    """flag -> (whether a value follows it, the option's longest name)."""
    out = {}
    for p in params:
        if isinstance(p, click.Option):
            longest = max(p.opts, key=len)
            for flag in (*p.opts, *p.secondary_opts):
                out[flag] = (not p.is_flag and not p.count, longest)
    return out


def generated(more: Callable[[list[str]], list[click.Parameter]], **form):
    """A decorator: the function becomes a GeneratedCommand (its docstring the help); `form`:
    its `forms` and `subject`."""

    def decorate(fn) -> GeneratedCommand:
        return GeneratedCommand(fn.__name__.replace("_", "-"), more, callback=fn, help=fn.__doc__, **form)

    return decorate


def given_value(args: list[str], flag: str) -> str | None:
    """The value of an option among a command's words (`--model tiny` or `--model=tiny`, the
    last one winning, as click does), else its value in a --config file, else None."""
    value = None
    for i, word in enumerate(args):
        if word == flag and i + 1 < len(args):
            value = args[i + 1]
        elif word.startswith(flag + "="):
            value = word.partition("=")[2]
    if value is None and "--config" in args[:-1]:
        try:
            value = read_config(Path(args[args.index("--config") + 1])).get(flag.lstrip("-"))
        except (ValueError, FileNotFoundError, OSError):
            return None  # --config itself says what is wrong with the file
    return None if value is None else str(value)


def helping(args: list[str]) -> bool:
    return any(word in HELP_FLAGS for word in args)
