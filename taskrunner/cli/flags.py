"""The command classes of every subcommand: click's, taking also the flag forms of Go's `flag`
package that TaskRunner's scripts use, and suggesting only options `--help` shows.

- `-name`, `-name=VALUE`, `-name VALUE` for `--name ...` (`-help` too);
- a boolean flag as `--name=BOOL` or `-name=BOOL`, BOOL one of Go's ParseBool values
  (GO_TRUE, GO_FALSE); `-name false` is, as in Go, not a value: with no arguments to take it
  the command exits 2 saying to write `-name=false`;
- a mistyped option gets a suggestion among the visible options only, never a hidden alias
  (`--hots` suggests `--redis-host`, not the legacy `--host`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import click

GO_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
GO_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})
GO_BOOLS = "1, 0, t, f, T, F, true, false, TRUE, FALSE, True, False"


class _GoFlags(click.Command):
    """Rewrites Go's forms into click's before click parses (see the module)."""

    stops_at_first_argument = False  # a group: its subcommand's words are the subcommand's

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # -h and --help on every command however it is invoked (also made without its group)
        self.context_settings.setdefault("help_option_names", ["-h", "--help"])

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = list(_Rewrite(self, ctx).rewrite(args))
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            if exc.possibilities is None:
                raise
            raise click.NoSuchOption(
                exc.option_name, possibilities=visible_long_options(self, ctx), ctx=ctx
            ) from None


class Command(_GoFlags):
    """A taskrunner subcommand (see the module)."""


class Group(_GoFlags, click.Group):
    """A taskrunner command group; its subcommands are `Command`s and `Group`s."""

    command_class = Command
    group_class = type  # subgroups: this class
    stops_at_first_argument = True


def visible_long_options(command: click.Command, ctx: click.Context) -> list[str]:
    return [
        name
        for param in command.get_params(ctx)
        if isinstance(param, click.Option) and not param.hidden
        for name in (*param.opts, *param.secondary_opts)
        if name.startswith("--")
    ]


def _is_bool_flag(param: click.Option) -> bool:
    return param.is_flag and not param.count


class _Rewrite:
    """One command's options, and the rewriting of its arguments."""

    def __init__(self, command: _GoFlags, ctx: click.Context) -> None:
        self.command = command
        self.long: dict[str, click.Option] = {}
        self.short: dict[str, click.Option] = {}
        params = command.get_params(ctx)
        for param in params:
            if isinstance(param, click.Option):
                for name in (*param.opts, *param.secondary_opts):
                    (self.long if name.startswith("--") else self.short)[name] = param
        self.takes_arguments = any(isinstance(p, click.Argument) for p in params)

    def rewrite(self, args: Sequence[str]) -> Iterator[str]:
        words = iter(args)
        for word in words:
            if word == "--" or not word.startswith("-") or word == "-":
                yield word
                if word == "--" or self.command.stops_at_first_argument:
                    yield from words
                    return
                continue
            name, sep, value = word.partition("=")
            long = self._long_name(name)
            if long is None:  # a short option, maybe with its value attached (`-cbiz`)
                yield word
                option = self.short.get(word)
                if option is not None and not option.is_flag:
                    yield from _next(words)
                continue
            option = self.long.get(long)
            if option is None:  # unknown: click says so, suggesting a visible option
                yield f"{long}{sep}{value}"
            elif _is_bool_flag(option):
                yield from self._bool_flag(word, long, option, value if sep else None, words)
            else:
                yield f"{long}{sep}{value}"
                if not sep:
                    yield from _next(words)

    def _long_name(self, name: str) -> str | None:
        """`--name` for `--name` or Go's `-name`; None for a short option (`-c`, `-cbiz`)."""
        if name.startswith("--"):
            return name
        if len(name) > 2 and (f"-{name}" in self.long or name[:2] not in self.short):
            return f"-{name}"
        return None

    def _bool_flag(
        self, word: str, long: str, option: click.Option, value: str | None, words: Iterator[str]
    ) -> Iterator[str]:
        on = long in option.opts
        if value is None:
            following = next(words, None)
            if following in GO_TRUE | GO_FALSE and not self.takes_arguments:
                raise click.UsageError(
                    f"{word} {following}: a boolean flag takes its value after '=', as in Go:"
                    f" write {word}={following} ({word} alone means {word}={str(on).lower()})"
                )
            yield long
            if following is not None:
                yield from self.rewrite([following, *words])
            return
        if value not in GO_TRUE | GO_FALSE:
            raise click.UsageError(
                f"{word}: {value!r} is not a boolean; use one of {GO_BOOLS} (e.g. {long}=false)"
            )
        wanted = on == (value in GO_TRUE)
        names = option.opts if wanted else option.secondary_opts
        if names:
            yield names[0]
        elif option.envvar is not None:
            raise click.UsageError(
                f"{word}: {long} has no off form: leave it out, and unset {option.envvar}"
            )


def _next(words: Iterator[str]) -> Iterator[str]:
    """The word after an option that takes a value: the value, as it is."""
    following: Any = next(words, None)
    if following is not None:
        yield following
