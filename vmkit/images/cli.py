"""``vmkit images``: pull and list guest images (mounted by vmkit/cli.py)."""

from __future__ import annotations

import logging
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from . import list_images, pull
from .errors import ImageError

images_app = typer.Typer(help="Guest images built from Debian packages.", no_args_is_help=True)
console = Console()


def _show_progress_logs() -> None:
    log = logging.getLogger("vmkit.images")
    if not log.handlers:
        log.addHandler(RichHandler(console=console, show_path=False, show_time=False))
        log.setLevel(logging.INFO)


@images_app.command("pull")
def pull_command(
    mirror: Annotated[str | None, typer.Option(metavar="URL",
        help="Debian mirror base URL (default: $VMKIT_DEBIAN_MIRROR, else the host's apt sources)")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if the image verifies.")] = False,
) -> None:
    """Build the default image (Debian trixie riscv64 kernel, OpenSBI, busybox initramfs)."""
    _show_progress_logs()
    started = time.monotonic()
    try:
        path = pull(mirror=mirror, force=force, progress=console.is_terminal)
    except ImageError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from e
    console.print(f"default image ready in {path} ({time.monotonic() - started:.1f} s)")


@images_app.command("ls")
def ls_command() -> None:
    """List the images in the data directory."""
    table = Table("name", "path", "size", "packages")
    for info in list_images():
        table.add_row(info.name, str(info.path), f"{info.size / 2**20:.1f} MiB",
                      "\n".join(info.packages))
    console.print(table)
