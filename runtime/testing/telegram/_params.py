"""Method parameters as the Bot API server reads them.

Parameters come from the query string, a JSON body, a form body or a multipart body (files);
in form and multipart bodies every value is a string and objects are JSON strings, which is
how aiogram sends them. Accessors convert like the real server: ``"true"``/``"1"`` are
true, a number may arrive as a string, and a wrong type is a 400 answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from ._errors import bad_request


@dataclass(frozen=True)
class UploadedFile:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class FileRef:
    """A file parameter: an upload, a ``file_id`` sent earlier, or an HTTP URL."""

    upload: UploadedFile | None = None
    file_id: str | None = None
    url: str | None = None


class Params:
    def __init__(self, values: dict[str, Any], files: dict[str, UploadedFile] | None = None):
        self.values = values
        self.files = dict(files or {})

    def has(self, name: str) -> bool:
        value = self.values.get(name)
        return value is not None and value != ""

    def string(
        self, name: str, *, required: bool = False, default: str | None = None
    ) -> str | None:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise bad_request(f'parameter "{name}" is required')
            return default
        if isinstance(value, (dict, list)):
            raise bad_request(f'field "{name}" must be of type String')
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def text(self, name: str) -> str:
        value = self.string(name, required=True)
        assert value is not None
        return value

    def integer(
        self, name: str, *, required: bool = False, default: int | None = None
    ) -> int | None:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise bad_request(f'parameter "{name}" is required')
            return default
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise bad_request(f'field "{name}" must be a valid Number')

    def required_int(self, name: str) -> int:
        value = self.integer(name, required=True)
        assert value is not None
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return bool(value)
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "1"):
                return True
            if lowered in ("false", "0"):
                return False
        raise bad_request(f'field "{name}" must be of type Boolean')

    def json(self, name: str, *, required: bool = False) -> Any:
        value = self.values.get(name)
        if value is None or value == "":
            if required:
                raise bad_request(f'parameter "{name}" is required')
            return None
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise bad_request(f"can't parse {name} JSON object") from None
        return value

    def chat_id(self, name: str = "chat_id") -> int:
        value = self.values.get(name)
        if value is None or value == "":
            raise bad_request(f'parameter "{name}" is required')
        if isinstance(value, str) and value.startswith("@"):
            raise bad_request("chat not found")
        number = self.integer(name)
        assert number is not None
        return number

    def file(self, name: str) -> FileRef:
        if name in self.files:
            return FileRef(upload=self.files[name])
        value = self.string(name, required=True)
        assert value is not None
        if value.startswith("attach://"):
            attached = self.files.get(value.removeprefix("attach://"))
            if attached is None:
                raise bad_request(f"wrong remote file identifier specified: {name}")
            return FileRef(upload=attached)
        if value.startswith(("http://", "https://")):
            return FileRef(url=value)
        return FileRef(file_id=value)

    def summary(self) -> dict[str, Any]:
        """The parameters for the call log: uploads as their size, not their bytes."""
        out = dict(self.values)
        for field, upload in self.files.items():
            out[field] = f"<{len(upload.data)} bytes: {upload.filename}>"
        return out


def parse_body(query_string: bytes, content_type: str, body: bytes) -> Params:
    values: dict[str, Any] = dict(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
    files: dict[str, UploadedFile] = {}
    media_type = content_type.split(";", 1)[0].strip().lower()
    if not body:
        return Params(values, files)
    if media_type == "application/json":
        try:
            data = json.loads(body)
        except ValueError:
            raise bad_request("can't parse JSON encoded request body") from None
        if not isinstance(data, dict):
            raise bad_request("can't parse JSON encoded request body")
        values.update(data)
    elif media_type == "application/x-www-form-urlencoded":
        values.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    elif media_type == "multipart/form-data":
        boundary = _param(content_type, "boundary")
        if not boundary:
            raise bad_request("can't parse multipart request body")
        for field, filename, part_type, data in _multipart(body, boundary.encode("latin-1")):
            if filename is None:
                values[field] = data.decode("utf-8", "replace")
            else:
                files[field] = UploadedFile(field, filename, part_type, data)
    return Params(values, files)


_PARAM = re.compile(r';\s*([A-Za-z0-9_*.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _param(header: str, name: str) -> str | None:
    found: dict[str, str] = {}
    for key, raw in _PARAM.findall(header):
        value = raw.strip()
        if value.startswith('"') and value.endswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        found[key.lower()] = value
    extended = found.get(name + "*")
    if extended is not None and "''" in extended:
        charset, _, encoded = extended.partition("''")
        return unquote(encoded, encoding=charset or "utf-8")
    return found.get(name)


def _multipart(body: bytes, boundary: bytes) -> list[tuple[str, str | None, str, bytes]]:
    delimiter = b"--" + boundary
    parts: list[tuple[str, str | None, str, bytes]] = []
    chunks = body.split(delimiter)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, separator, data = chunk.partition(b"\r\n\r\n")
        if not separator:
            continue
        data = data.removesuffix(b"\r\n")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        field = _param(disposition, "name")
        if field is None:
            continue
        parts.append(
            (
                field,
                _param(disposition, "filename"),
                headers.get("content-type", "application/octet-stream"),
                data,
            )
        )
    return parts
