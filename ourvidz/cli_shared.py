"""What every command of the CLI shares: the consoles, the one-line error handler (`handled`),
JSON for scripts, and the argument groups composed into each command (as mflux does), so an option
means the same everywhere."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ourvidz import errors, views

out, err = views.console(), views.console(stderr=True)


def debugging() -> bool:
    return os.environ.get("OURVIDZ_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def print_traceback(exc: BaseException) -> None:
    """OURVIDZ_DEBUG: the traceback before the one line, with the library error an ourvidz error
    was made from (which `raise ... from None` hides from users)."""
    import traceback

    exc.__suppress_context__ = False
    sys.stderr.write("".join(traceback.format_exception(exc)))
    sys.stderr.flush()


def masked(message: object) -> str:
    """Every error line goes out with the secrets of the URLs this command was given masked (the
    --redis and --callback-url values, $OURVIDZ_REDIS), in any form, and every URL in it masked."""
    from ourvidz.redact import mask_text, url_secrets

    given = [a.split("=", 1)[1] if a.startswith("--") and "=" in a else a for a in sys.argv[1:]]
    found = [s for a in [*given, os.environ.get("OURVIDZ_REDIS", "")] if "://" in a for s in url_secrets(a)]
    from rich.markup import escape

    return escape(mask_text(str(message), found))  # a message may quote [brackets] of user input


def handled(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except errors.OurvidzError as exc:
            if debugging():
                print_traceback(exc)
            err.print(f"[bold red]error:[/] {masked(exc)}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            if debugging():
                print_traceback(exc)
            err.print("[bold red]interrupted[/]; finished outputs are kept")
            raise typer.Exit(errors.EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # a bug: still one line, after the traceback when asked for it
            if debugging():
                print_traceback(exc)
                hint = ""
            else:
                hint = " (set OURVIDZ_DEBUG=1 for the traceback)"
            err.print(f"[bold red]error:[/] unexpected {type(exc).__name__}: {masked(exc)}{hint}", highlight=False,
                      soft_wrap=True)
            raise typer.Exit(errors.EXIT_BUG) from None

    return wrapper


def print_json(data) -> None:
    """--json: one JSON document on stdout and nothing else (messages and errors go to stderr)."""
    import json

    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


# Shared argument groups.
PresetsDir = Annotated[Optional[Path], typer.Option("--presets-dir", help="Extra presets folder (before $OURVIDZ_PRESETS and the built-in ones).")]
ModelsFile = Annotated[Optional[Path], typer.Option("--models", help="Models file (else $OURVIDZ_MODELS, else ~/.config/ourvidz/models.yaml).")]
Demo = Annotated[bool, typer.Option("--demo", help="Use the built-in tiny random-weight demo models.")]
Device = Annotated[Optional[str], typer.Option("--device", help="cuda, cuda:N or cpu (default: cuda when present).")]
Steps = Annotated[Optional[int], typer.Option("--steps", help="Override the preset's denoising steps.")]
Guidance = Annotated[Optional[float], typer.Option("--guidance", help="Override the preset's guidance scale.")]
Width = Annotated[Optional[int], typer.Option("--width", help="Override the preset's width.")]
Height = Annotated[Optional[int], typer.Option("--height", help="Override the preset's height.")]
Frames = Annotated[Optional[int], typer.Option("--frames", help="Override the preset's frame count (wan: 4k+1).")]
NumImages = Annotated[Optional[int], typer.Option("--num-images", help="Override the preset's images per job (sdxl).")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Base seed; image i uses seed + i (default: random).")]
Negative = Annotated[str, typer.Option("--negative", help="Your own negative text; it comes first.")]
AutoNegative = Annotated[bool, typer.Option("--auto-negative/--no-auto-negative", help="Add the priority-based negative prompt.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (for scripts), nothing else.")]
Enhance = Annotated[Optional[bool], typer.Option("--enhance/--no-enhance", help="Qwen prompt enhancement (default: the preset's).")]
Gpus = Annotated[int, typer.Option("--gpus", min=1, help="Spread each job over this many GPUs of this host (torch.distributed; with --device cpu: that many CPU processes).")]
Weighting = Annotated[bool, typer.Option("--weighting/--no-weighting", help="SDXL prompt weights: (word:1.3), (word), [word], word++, (word)1.3; --no-weighting reads brackets literally.")]


def overrides(steps, guidance, width, height, frames, num_images):
    from ourvidz.overrides import Overrides

    return Overrides(steps=steps, guidance=guidance, width=width, height=height, frames=frames, num_images=num_images)
