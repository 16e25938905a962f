"""``vmkit disk``: create, inspect, convert, check, resize and snapshot disk images
(like qemu-img; mounted by vmkit/cli.py).

    vmkit disk create -f qcow2 disk.qcow2 20G
    vmkit disk create --backing base.qcow2 overlay.qcow2
    vmkit disk info [--format json] disk.qcow2
    vmkit disk convert -f raw -O qcow2 disk.img disk.qcow2
    vmkit disk check [--repair leaks] disk.qcow2      exit 0 clean, 2 corrupt, 3 leaks only
    vmkit disk resize disk.qcow2 +10G
    vmkit disk snapshot -c before-upgrade disk.qcow2   (-l list, -a apply, -d delete)

Without -f the format of the file named on the command line is recognised
from its first bytes, as qemu-img does; a VM's disks never are (see
vmkit/storage/image.py). Errors are one line on stderr, "vmkit: error: ...",
exit status 1 (2 for usage errors).
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from typer.core import TyperCommand, TyperGroup

try:
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # typer releases that use the click package
    from click.exceptions import NoArgsIsHelpError, UsageError

from .errors import ImageFormatError

EXIT_ERROR = 1
EXIT_USAGE = 2


def _usage_error(e: UsageError) -> typer.Exit:
    print(f"vmkit: error: {e.format_message()}", file=sys.stderr)
    return typer.Exit(EXIT_USAGE)


class _OneLineCommand(TyperCommand):
    """Usage errors as one line, "vmkit: error: ...", exit status 2."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except NoArgsIsHelpError:
            raise
        except UsageError as e:
            raise _usage_error(e) from None


class _OneLineGroup(TyperGroup):
    def resolve_command(self, ctx, args):
        try:
            return super().resolve_command(ctx, args)
        except NoArgsIsHelpError:
            raise
        except UsageError as e:
            raise _usage_error(e) from None


disk_app = typer.Typer(cls=_OneLineGroup, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False,
                       help="Disk images (raw, qcow2): create, info, convert, check, resize, snapshot.")
_command = disk_app.command


def command(name: str):
    return _command(name, cls=_OneLineCommand, context_settings={"help_option_names": ["-h", "--help"]})


def _fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    print(f"vmkit: error: {message}", file=sys.stderr)
    return typer.Exit(code)


def _format_of(path: str, fmt: Optional[str]) -> str:
    from .image import FORMATS, probe_format
    if fmt is None:
        return probe_format(path)
    if fmt not in FORMATS:
        raise _fail(f"unknown image format {fmt!r}: use raw or qcow2", EXIT_USAGE)
    return fmt


def _size(text: str) -> int:
    from .image import parse_size
    try:
        return parse_size(text)
    except ImageFormatError as e:
        raise _fail(str(e), EXIT_USAGE) from None


@command("create")
def create_command(
    path: str = typer.Argument(..., metavar="PATH", help="Image file to create (overwritten if it exists)."),
    size: Optional[str] = typer.Argument(None, metavar="SIZE",
                                         help="Virtual size: bytes or K/M/G/T suffix (default: the backing file's)."),
    fmt: Optional[str] = typer.Option(None, "-f", "--format", metavar="raw|qcow2",
                                      help="Image format (default: qcow2 with --backing, else raw)."),
    backing: Optional[str] = typer.Option(None, "-b", "--backing", metavar="FILE",
                                          help="Backing file (relative names are relative to PATH's directory)."),
    backing_format: Optional[str] = typer.Option(None, "-F", "--backing-format", metavar="raw|qcow2",
                                                 help="Format of the backing file (recognised if omitted)."),
    cluster_size: str = typer.Option("64K", "--cluster-size", help="qcow2 cluster size, 512 to 2M."),
    lazy_refcounts: bool = typer.Option(False, "--lazy-refcounts", help="qcow2: defer refcount updates."),
    compat: str = typer.Option("1.1", "--compat", help="qcow2: 1.1 (version 3) or 0.10 (version 2)."),
):
    """Create a new, empty disk image."""
    from .image import create_image
    fmt = fmt or ("qcow2" if backing else "raw")
    if fmt not in ("raw", "qcow2"):
        raise _fail(f"unknown image format {fmt!r}: use raw or qcow2", EXIT_USAGE)
    nbytes = _size(size) if size is not None else None
    if nbytes is None and not backing:
        raise _fail("missing SIZE (it may only be left out with --backing)", EXIT_USAGE)
    try:
        create_image(path, fmt, nbytes, backing=backing, backing_format=backing_format,
                     cluster_size=_size(cluster_size), lazy_refcounts=lazy_refcounts, compat=compat)
    except ImageFormatError as e:
        raise _fail(str(e)) from None
    print(f"Formatting '{path}', fmt={fmt}" + (f" size={nbytes}" if nbytes is not None else "")
          + (f" backing_file={backing}" if backing else ""))


@command("info")
def info_command(
    path: str = typer.Argument(..., metavar="PATH"),
    output: str = typer.Option("human", "--format", "--output", metavar="human|json", help="Output format."),
    image_format: Optional[str] = typer.Option(None, "--image-format", "-f", metavar="raw|qcow2",
                                               help="Image format (recognised if omitted)."),
):
    """Show format, sizes, backing chain, snapshots and flags of an image."""
    from .info import describe_image, format_info
    if output not in ("human", "json"):
        raise _fail(f"--format {output!r}: use human or json", EXIT_USAGE)
    try:
        info = describe_image(path, _format_of(path, image_format))
    except ImageFormatError as e:
        raise _fail(str(e)) from None
    print(json.dumps(info, indent=2) if output == "json" else format_info(info))


@command("convert")
def convert_command(
    src: str = typer.Argument(..., metavar="SRC"),
    dst: str = typer.Argument(..., metavar="DST"),
    src_format: Optional[str] = typer.Option(None, "-f", metavar="raw|qcow2", help="Source format."),
    dst_format: str = typer.Option("raw", "-O", metavar="raw|qcow2", help="Destination format."),
    cluster_size: str = typer.Option("64K", "--cluster-size", help="qcow2 destination cluster size."),
):
    """Copy an image into a new file of the given format, skipping zeros (flattens backing chains)."""
    from .convert import convert
    if dst_format not in ("raw", "qcow2"):
        raise _fail(f"unknown image format {dst_format!r}: use raw or qcow2", EXIT_USAGE)
    try:
        convert(src, _format_of(src, src_format), dst, dst_format, cluster_size=_size(cluster_size))
    except ImageFormatError as e:
        raise _fail(str(e)) from None


@command("check")
def check_command(
    path: str = typer.Argument(..., metavar="PATH"),
    repair: Optional[str] = typer.Option(None, "--repair", "-r", metavar="leaks",
                                         help="Free leaked clusters (only when nothing is corrupt)."),
    image_format: Optional[str] = typer.Option(None, "-f", metavar="raw|qcow2"),
    output: str = typer.Option("human", "--format", "--output", metavar="human|json"),
):
    """Check refcounts and tables. Exit status: 0 clean, 2 corrupt, 3 leaks only, 63 raw."""
    from .check import check_image, format_report
    if repair not in (None, "leaks"):
        raise _fail(f"--repair {repair!r}: only 'leaks' is supported", EXIT_USAGE)
    try:
        result = check_image(path, _format_of(path, image_format), repair=repair)
    except ImageFormatError as e:
        raise _fail(str(e)) from None
    if output == "json" and result.supported:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(format_report(result), file=sys.stderr if not result.supported else sys.stdout)
    raise typer.Exit(result.exit_code)


@command("resize")
def resize_command(
    path: str = typer.Argument(..., metavar="PATH"),
    size: str = typer.Argument(..., metavar="SIZE", help="New size, or +SIZE / -SIZE (use -- before -SIZE)."),
    image_format: Optional[str] = typer.Option(None, "-f", metavar="raw|qcow2"),
    shrink: bool = typer.Option(False, "--shrink", help="Allow shrinking (raw only; data past the end is lost)."),
):
    """Change the virtual size of an image."""
    from .image import open_image
    try:
        fmt = _format_of(path, image_format)
        with open_image(path, fmt) as img:
            if size.startswith(("+", "-")):
                delta = _size(size[1:])
                new = img.virtual_size + delta if size[0] == "+" else img.virtual_size - delta
            else:
                new = _size(size)
            if new < 0:
                raise _fail(f"size {size} would make the disk smaller than zero", EXIT_USAGE)
            if fmt == "raw":
                img.resize(new, shrink=shrink)
            else:
                img.resize(new)
    except ImageFormatError as e:
        raise _fail(str(e)) from None
    print("Image resized.")


@command("snapshot")
def snapshot_command(
    path: str = typer.Argument(..., metavar="PATH"),
    list_: bool = typer.Option(False, "-l", "--list", help="List snapshots."),
    create: Optional[str] = typer.Option(None, "-c", "--create", metavar="NAME", help="Create a snapshot."),
    apply: Optional[str] = typer.Option(None, "-a", "--apply", metavar="NAME", help="Revert to a snapshot."),
    delete: Optional[str] = typer.Option(None, "-d", "--delete", metavar="NAME", help="Delete a snapshot."),
    image_format: Optional[str] = typer.Option(None, "-f", metavar="qcow2"),
):
    """Internal snapshots of a qcow2 image (like qemu-img snapshot)."""
    from .info import snapshot_dicts, snapshot_lines
    chosen = [x for x in (list_ or None, create, apply, delete) if x]
    if len(chosen) != 1:
        raise _fail("give exactly one of -l, -c NAME, -a NAME, -d NAME", EXIT_USAGE)
    try:
        fmt = _format_of(path, image_format)
        if fmt != "qcow2":
            raise _fail(f"{path}: {fmt} images have no internal snapshots; use qcow2")
        from .qcow2 import Qcow2Image
        with Qcow2Image(path, readonly=list_, open_backing=not list_) as img:
            if list_:
                if img.snapshots:
                    print("\n".join(snapshot_lines(snapshot_dicts(img.snapshots))))
            elif create:
                img.snapshot_create(create)
            elif apply:
                img.snapshot_apply(apply)
            else:
                img.snapshot_delete(delete)
    except ImageFormatError as e:
        raise _fail(str(e)) from None
