"""vmkit/images/kernel.py: recognising the RISC-V Image format."""

import gzip
import struct

import pytest

from vmkit.images.errors import ImageError
from vmkit.images.kernel import kernel_image


def fake_image(efi: bool = True, size: int = 4096) -> bytes:
    """A RISC-V Image header (boot-image-header.rst) followed by padding."""
    code0 = b"MZ\x6f\x10" if efi else b"\x6f\x00\x00\x00"  # "MZ" doubles as c.li s4,-13
    header = code0 + struct.pack("<IQQQIIQ", 0, 0x200000, 0x1E6C000, 0, 0x2, 0, 0)
    header += b"RISCV\0\0\0" + b"RSC\x05" + struct.pack("<I", 0x40 if efi else 0)
    assert len(header) == 64
    return header + bytes(size - 64)


def test_raw_image_with_efi_stub():
    k = kernel_image(fake_image())
    assert (k.source_format, k.efi_stub, k.text_offset, k.load_address) == \
        ("Image", True, 0x200000, 0x80200000)
    assert k.image_size == 0x1E6C000 and k.header_version == (0, 2)


def test_gzip_image():
    raw = fake_image(efi=False)
    k = kernel_image(gzip.compress(raw))
    assert k.data == raw and k.source_format == "Image.gz" and not k.efi_stub


def test_zboot_gzip():
    raw = fake_image()
    payload = gzip.compress(raw)
    zboot = b"MZ\0\0zimg" + struct.pack("<II", 0x40, len(payload)) + bytes(8)
    zboot += b"gzip".ljust(32, b"\0")
    zboot = zboot.ljust(0x40, b"\0") + payload
    k = kernel_image(zboot)
    assert k.data == raw and k.source_format == "zboot-gzip"


def test_rejects_elf_and_unknown():
    with pytest.raises(ImageError, match="ELF"):
        kernel_image(b"\x7fELF" + bytes(100))
    with pytest.raises(ImageError, match="RSC"):
        kernel_image(bytes(4096))
