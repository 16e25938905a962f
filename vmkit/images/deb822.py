"""Debian control-file syntax (deb822): Release, Packages and *.sources files.

Debian Policy 5.1: a file is a list of stanzas separated by blank lines; a
stanza is a list of ``Field: value`` lines; a line starting with a space or tab
continues the previous field. A continuation line of just `` .`` stands for an
empty line. Lines starting with ``#`` are comments (allowed in apt's .sources
files, never present in archive indexes, so accepting them everywhere is safe).
"""

from __future__ import annotations


def parse_deb822(text: str) -> list[dict[str, str]]:
    """Split deb822 text into stanzas of ``{field: value}``.

    Field names keep their spelling (look them up as written in the spec:
    ``SHA256``, ``Filename``). A multi-line value keeps its first line, then
    one ``\\n``-separated line per continuation line with its leading
    whitespace removed; a Release file's ``SHA256`` value therefore starts
    with an empty line.
    """
    stanzas: list[dict[str, str]] = []
    stanza: dict[str, str] = {}
    field = None
    for line in text.splitlines():
        if not line.strip():
            if stanza:
                stanzas.append(stanza)
                stanza, field = {}, None
            continue
        if line[0] == "#":
            continue
        if line[0] in " \t":
            if field is None:
                raise ValueError(f"deb822: continuation line without a field: {line!r}")
            rest = line.strip()
            stanza[field] += "\n" + ("" if rest == "." else rest)
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"deb822: line is neither 'Field: value' nor a continuation: {line!r}")
        field = name.strip()
        stanza[field] = value.strip()
    if stanza:
        stanzas.append(stanza)
    return stanzas
