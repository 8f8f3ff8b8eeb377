"""Reads the YAML that `tollgate render envoy` writes, with the standard library only.

The bootstrap is rendered by serde_yaml from a JSON value, so it uses a small,
regular subset of YAML: block mappings and sequences, `{}` and `[]` for empty
collections, and plain, single-quoted or double-quoted scalars on one line.
This reader accepts exactly that subset and raises `ValueError` on anything
else (anchors, block scalars, flow collections with content ...), so a change
in the renderer shows up as an error rather than a wrong configuration.
"""

import json
import re

_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][-+]?[0-9]+)?$")


def _scalar(text, lineno):
    t = text.strip()
    if t == "{}":
        return {}
    if t == "[]":
        return []
    if t.startswith("'"):
        if not t.endswith("'") or len(t) < 2:
            raise ValueError(f"line {lineno}: unterminated single-quoted scalar")
        return t[1:-1].replace("''", "'")
    if t.startswith('"'):
        # YAML double-quoted escapes used by serde_yaml are a subset of JSON's.
        return json.loads(t)
    if t[:1] in ("{", "[", "&", "*", "!", "|", ">"):
        raise ValueError(f"line {lineno}: unsupported YAML construct: {t[:20]!r}")
    if t in ("null", "~", ""):
        return None
    if t == "true":
        return True
    if t == "false":
        return False
    if _INT.match(t):
        return int(t)
    if _FLOAT.match(t):
        return float(t)
    return t


def _split_key(body, lineno):
    """`key: value` or `key:` -> (key, value text or None)."""
    if body.startswith("'") or body.startswith('"'):
        quote = body[0]
        i = 1
        while i < len(body):
            if body[i] == quote:
                if quote == "'" and body[i + 1 : i + 2] == "'":
                    i += 2
                    continue
                if quote == '"' and body[i - 1] == "\\":
                    i += 1
                    continue
                break
            i += 1
        key = _scalar(body[: i + 1], lineno)
        rest = body[i + 1 :]
    else:
        m = re.match(r"^([^:#]+?):(\s|$)", body)
        if not m:
            return None
        key = m.group(1)
        rest = body[len(m.group(1)) :]
    if not rest.startswith(":"):
        return None
    value = rest[1:].strip()
    return key, (value if value else None)


def loads(text):
    lines = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise ValueError(f"line {n}: tab indentation")
        lines.append((n, len(raw) - len(raw.lstrip(" ")), raw.strip()))
    pos = 0

    def parse_block(indent):
        nonlocal pos
        n, ind, body = lines[pos]
        if ind != indent:
            raise ValueError(f"line {n}: expected indent {indent}, got {ind}")
        if body == "-" or body.startswith("- "):
            return parse_seq(indent)
        return parse_map(indent)

    def parse_value_after_key(indent, n):
        # A key with nothing after ':' owns the following deeper block, or a
        # sequence at the same indent (serde_yaml does not indent sequences).
        nonlocal pos
        if pos < len(lines):
            _, ind, body = lines[pos]
            if ind > indent:
                return parse_block(ind)
            if ind == indent and (body == "-" or body.startswith("- ")):
                return parse_seq(indent)
        raise ValueError(f"line {n}: key without a value")

    def parse_map(indent, first=None):
        nonlocal pos
        out = {}
        while pos < len(lines):
            n, ind, body = lines[pos]
            if first is not None:
                ind, body, first = indent, first, None
            if ind < indent:
                break
            if ind > indent:
                raise ValueError(f"line {n}: unexpected indentation")
            if body.startswith("- ") or body == "-":
                break
            kv = _split_key(body, n)
            if kv is None:
                raise ValueError(f"line {n}: expected `key: value`: {body[:40]!r}")
            key, value = kv
            pos += 1
            out[key] = _scalar(value, n) if value is not None else parse_value_after_key(indent, n)
        return out

    def parse_seq(indent):
        nonlocal pos
        out = []
        while pos < len(lines):
            n, ind, body = lines[pos]
            if ind != indent or not (body == "-" or body.startswith("- ")):
                break
            item = body[1:].strip()
            if not item:
                pos += 1
                out.append(parse_block(lines[pos][1]))
                continue
            if _split_key(item, n) is not None and not item.startswith(("'", '"')) or (
                item.startswith(("'", '"')) and _split_key(item, n) is not None
            ):
                # `- key: value` starts a mapping whose keys sit at indent + 2.
                child = indent + 2
                out.append(parse_map(child, first=item))
            else:
                pos += 1
                out.append(_scalar(item, n))
        return out

    if not lines:
        return None
    result = parse_block(lines[0][1])
    if pos != len(lines):
        raise ValueError(f"line {lines[pos][0]}: unexpected content")
    return result
