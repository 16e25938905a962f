"""The RISC-V Linux kernel image: recognise its format and get a raw ``Image``.

Linux Documentation/arch/riscv/boot-image-header.rst: a flat ``Image`` starts
with a 64-byte header: ``code0``/``code1`` (an ``MZ`` PE signature when the
EFI stub is built in), ``text_offset`` (u64 at 0x08: load this far past the
2 MiB-aligned start of RAM), ``image_size`` (u64 at 0x10), ``flags``,
``version`` (u32 at 0x20), reserved words, ``magic`` "RISCV\\0\\0\\0" at 0x30
(deprecated), ``magic2`` "RSC\\x05" at 0x38 and the PE header offset at 0x3c.

Debian's riscv64 kernel package installs such an Image (with the EFI stub,
so ``file`` calls it a PE32+ EFI application) as /boot/vmlinux-<release>; a
gzip'd Image (``Image.gz``) and an EFI zboot image (``MZ``, ``zimg`` at 4,
payload offset/size at 8/12, compression name at 0x18) are also understood.
"""

from __future__ import annotations

import gzip
import lzma
import struct
from dataclasses import dataclass

from .errors import ImageError

IMAGE_MAGIC2 = b"RSC\x05"
IMAGE_MAGIC2_OFFSET = 0x38
# XXX: QEMU virt RAM base; use RAM_BASE from vmkit/machine/memmap.py once it has landed.
DRAM_BASE = 0x8000_0000


@dataclass(frozen=True)
class KernelImage:
    data: bytes  # the raw Image, loadable as is
    source_format: str  # what the package shipped: "Image", "Image.gz", "zboot-gzip", ...
    efi_stub: bool
    text_offset: int
    image_size: int  # bytes of memory the kernel claims from its load address
    header_version: tuple[int, int]

    @property
    def load_address(self) -> int:
        return DRAM_BASE + self.text_offset


def kernel_image(data: bytes) -> KernelImage:
    """Parse (and if needed decompress) a kernel file into a raw RISC-V ``Image``."""
    source = "Image"
    if data[:2] == b"\x1f\x8b":
        data, source = gzip.decompress(data), "Image.gz"
    elif data[:2] == b"MZ" and data[4:8] == b"zimg":
        data, source = _unzboot(data)
    if data[:4] == b"\x7fELF":
        raise ImageError("the kernel is an ELF vmlinux, not a bootable Image; "
                         "vmkit boots the flat Image that Debian's linux-image package installs")
    if data[IMAGE_MAGIC2_OFFSET:IMAGE_MAGIC2_OFFSET + 4] != IMAGE_MAGIC2:
        raise ImageError("the kernel file has no RISC-V Image header (magic 'RSC\\x05' at 0x38): "
                         "the package layout changed; report it with the kernel version")
    text_offset, image_size = struct.unpack_from("<QQ", data, 0x08)
    version = struct.unpack_from("<I", data, 0x20)[0]
    return KernelImage(data, source, data[:2] == b"MZ", text_offset, image_size,
                       (version >> 16, version & 0xFFFF))


def _unzboot(data: bytes) -> tuple[bytes, str]:
    offset, size = struct.unpack_from("<II", data, 0x08)
    kind = data[0x18:0x18 + 32].split(b"\0", 1)[0].decode("ascii", "replace")
    payload = data[offset:offset + size]
    if kind == "gzip":
        return gzip.decompress(payload), "zboot-gzip"
    if kind in ("xz", "lzma"):
        return lzma.decompress(payload), f"zboot-{kind}"
    if kind == "zstd22" or kind == "zstd":
        try:
            import zstandard
        except ImportError as e:
            raise ImageError("the kernel is zstd-compressed: pip install zstandard") from e
        return zstandard.ZstdDecompressor().decompressobj().decompress(payload), "zboot-zstd"
    raise ImageError(f"the kernel is an EFI zboot image compressed with {kind!r}, "
                     "which vmkit cannot decompress")
