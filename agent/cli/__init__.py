"""The `geoscreen` command.  Each sub-command group is a module of this package that registers
itself here; `console` holds the output helpers they share.

Top-level imports stay light: every command, however small, pays for them.
"""

from __future__ import annotations

import sys

import typer

from geoscreen.errors import GeoscreenError

app = typer.Typer(
    name="geoscreen",
    help="Screen hypotheses about the geometry of single-cell foundation-model embeddings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_COMMAND_MODULES = ("cache", "probes", "campaign", "ledger", "demo", "resources", "extract",
                    "report", "fdr", "llm", "sae")


def _register() -> None:
    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(f"geoscreen.agent.cli.{name}").register(app)


def _plain_flag_types() -> None:
    """Help shows a value type for options that take a value, none for on/off flags (typer
    prints a bogus ``<bool>`` for every flag otherwise)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: object) -> str | None:
        return None if self.is_flag else shown(self, ctx)  # type: ignore[arg-type]

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


@app.callback()
def _root(version: bool = typer.Option(False, "--version", help="print the version and exit",
                                       is_eager=True)) -> None:
    if version:
        from geoscreen.version import package_version

        typer.echo(f"geoscreen {package_version()}")
        raise typer.Exit()


_register()
_plain_flag_types()


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="geoscreen")
        if isinstance(rv, int) and not isinstance(rv, bool):
            return rv  # a command that raised typer.Exit(code): click returns the code
    except GeoscreenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # usage errors (click's, vendored by typer): one line too
        fmt = getattr(exc, "format_message", None)
        if callable(fmt) and isinstance(getattr(exc, "exit_code", None), int):
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else "geoscreen"
            text = " ".join(str(fmt()).split())
            print(f"error: {where}: {text} (see '{where} --help')", file=sys.stderr)
            return int(exc.exit_code)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
