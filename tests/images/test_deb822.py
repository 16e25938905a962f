"""vmkit/images/deb822.py: control-file stanzas."""

import pytest

from vmkit.images.deb822 import parse_deb822


def test_stanzas_continuations_and_comments():
    text = ("# comment\nPackage: a\nDescription: short\n long\n .\n more\n\n\n"
            "Package: b\nSHA256:\n 00 1 x\n 11 2 y\n")
    assert parse_deb822(text) == [
        {"Package": "a", "Description": "short\nlong\n\nmore"},
        {"Package": "b", "SHA256": "\n00 1 x\n11 2 y"},
    ]


def test_errors():
    with pytest.raises(ValueError):
        parse_deb822(" orphan continuation\n")
    with pytest.raises(ValueError):
        parse_deb822("no colon here\n")
