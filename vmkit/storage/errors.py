"""The one error class of the disk-image area (`vmkit/storage`, `vmkit disk ...`)."""


class ImageFormatError(Exception):
    """A disk image could not be created, opened, read, written or checked.

    Raised for malformed or unsupported images, requests outside the disk,
    writes to read-only images and host I/O errors alike, so the block device
    needs one except clause to answer VIRTIO_BLK_S_IOERR. The message says
    what is wrong and what to do about it.
    """
