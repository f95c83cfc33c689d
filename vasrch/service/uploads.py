"""An uploaded query image out of a POST body: the raw image, multipart field `image`, or JSON
with base64. Sizes are checked from the headers before the body is read, and while it is read."""

from __future__ import annotations

import base64
import binascii
import email.message
import email.parser
import email.policy
import re
import string
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError, create_model
from starlette.requests import ClientDisconnect, Request

from vasrch.service.errors import RequestError, validation_problems
from vasrch.service.schemas import DATA_URL_PREFIX, FILTER_LIMITS, ImageQuery

RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
MULTIPART = "multipart/form-data"
FORM_FIELD = "image"  # the multipart/form-data field that holds the image
JSON = "application/json"
MAX_PARTS = 8  # parts of a multipart/form-data body read before it is refused
# Room for a JSON body's other fields and a data-URL prefix beside the base64 text.
JSON_OVERHEAD_BYTES = 65_536
_BASE64_BYTES = (string.ascii_letters + string.digits + "+/=").encode("ascii")
_DATA_URL = re.compile("^" + DATA_URL_PREFIX, re.ASCII)


@dataclass(frozen=True)
class Upload:
    """An uploaded image, the name the answer calls it, and the options its JSON body gave."""

    data: bytes
    name: str = "upload"
    top_n: int | None = None
    probes: int | None = None
    filters: dict[str, str | list[str]] | None = None


def media_type(content_type: str) -> str:
    """The media type of a Content-Type header, lower case, without its parameters."""
    return content_type.split(";")[0].strip().lower()


def check_media_type(content_type: str) -> str:
    """The media type of an upload, or 415 when it is not one the service reads."""
    media = media_type(content_type)
    if media in (MULTIPART, JSON) or media.startswith(RAW_IMAGE_TYPES):
        return media
    raise RequestError(
        415,
        f"Content-Type {content_type!r} is not accepted: send the image as the body with "
        f"Content-Type image/*, as the field {FORM_FIELD!r} of multipart/form-data, or as "
        'application/json {"image_base64": ...}',
    )


def body_limit(media: str, max_upload_bytes: int) -> int:
    """Largest body accepted for an upload of `media`: JSON carries the image in base64."""
    if media == JSON:
        return 4 * -(-max_upload_bytes // 3) + JSON_OVERHEAD_BYTES
    return max_upload_bytes


def too_large(size: int | str, limit: int) -> RequestError:
    """The 413 of an upload bigger than `limit` bytes."""
    return RequestError(
        413,
        f"upload of {size} bytes is larger than the limit of {limit} bytes (max_upload_bytes); "
        "send a smaller image",
    )


def check_length(request: Request, limit: int) -> None:
    """Refuse, from the headers alone, a body without a length (411) or longer than `limit`
    bytes (413)."""
    length = request.headers.get("content-length")
    if length is None and "chunked" not in request.headers.get("transfer-encoding", "").lower():
        raise RequestError(
            411, "POST /query needs a Content-Length header (or a chunked Transfer-Encoding)"
        )
    if length is not None and int(length) > limit:
        raise too_large(length, limit)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as more than `limit` bytes have come."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large(f"more than {limit}", limit)
    except ClientDisconnect:
        length = request.headers.get("content-length", "?")
        raise RequestError(400, f"body ended after {len(body)} of {length} bytes") from None
    finally:
        request.state.body_read = True
    return bytes(body)


def parse_upload(media: str, content_type: str, body: bytes, max_upload_bytes: int) -> Upload:
    """The image and options of an upload body of the given media type."""
    if media == MULTIPART:
        upload = _multipart_image(content_type, body)
    elif media == JSON:
        upload = _json_image(body, max_upload_bytes)
    else:
        upload = Upload(body)
    if not upload.data:
        raise RequestError(400, "empty upload: send an image")
    return upload


def _multipart_image(content_type: str, body: bytes) -> Upload:
    """The bytes and filename of the form field `FORM_FIELD` of a multipart/form-data body of
    at most `MAX_PARTS` parts: the body is cut at its delimiters (a split that stops past the
    limit), and only each part's headers go through the email parser."""
    header = email.message.EmailMessage(policy=email.policy.HTTP)
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise RequestError(400, "malformed multipart/form-data: no boundary in its Content-Type")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    sections = (b"\r\n" + body).split(delimiter, MAX_PARTS + 1)[1:]
    if len(sections) > MAX_PARTS and not sections[MAX_PARTS].startswith(b"--"):
        raise RequestError(
            400,
            f"multipart/form-data body has more than {MAX_PARTS} parts; send the image as the "
            f"field {FORM_FIELD!r} with few others",
        )
    for section in sections:
        if section.startswith(b"--"):  # the close delimiter
            break
        _, _, part = section.partition(b"\r\n")  # transport padding after the delimiter
        head, _, content = part.partition(b"\r\n\r\n")
        headers = email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(head)
        if headers.get_param("name", header="content-disposition") == FORM_FIELD:
            return Upload(_decoded(headers, head, content), headers.get_filename() or "upload")
    raise RequestError(
        400, f"multipart/form-data has no field named {FORM_FIELD!r}; send the file as it"
    )


def _decoded(headers: email.message.Message, head: bytes, content: bytes) -> bytes:
    """A part's content, undoing a Content-Transfer-Encoding (RFC 7578 deprecates it)."""
    if headers.get("content-transfer-encoding") is None:
        return content
    part = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        head + b"\r\n\r\n" + content
    )
    return part.get_payload(decode=True) or b""


def _json_image(body: bytes, max_upload_bytes: int) -> Upload:
    """The image and options of a JSON body (`ImageQuery`). Its text beside the base64
    characters is measured first (at C speed): parsing builds one Python object per value, and
    a body of a million filter values would hold the interpreter for a second."""
    if len(body.translate(None, _BASE64_BYTES)) > JSON_OVERHEAD_BYTES:
        raise RequestError(
            400,
            f"JSON body: the fields beside image_base64 take more than {JSON_OVERHEAD_BYTES} "
            f"bytes; send fewer filters ({FILTER_LIMITS})",
        )
    try:
        query = ImageQuery.model_validate_json(body)
    except ValidationError as err:
        raise RequestError(
            400,
            f"JSON body: {validation_problems(err.errors())}; send "
            '{"image_base64": "<base64 of the image file>", "top_n": 10}',
        ) from None
    text = _DATA_URL.sub("", query.image_base64, count=1)
    if len(text) > body_limit(JSON, max_upload_bytes) - JSON_OVERHEAD_BYTES:
        raise too_large(f"about {len(text) * 3 // 4}", max_upload_bytes)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            400,
            "image_base64 is not valid base64: encode the image file's bytes in the standard "
            "alphabet (A-Z, a-z, 0-9, +, /, padded with =)",
        ) from None
    if len(data) > max_upload_bytes:
        raise too_large(len(data), max_upload_bytes)
    return Upload(data, top_n=query.top_n, probes=query.probes, filters=query.filters)


ImageBytes = Annotated[bytes, Field(min_length=1, description="The image file.")]
UploadForm = create_model("UploadForm", **{FORM_FIELD: (ImageBytes, ...)})


# An 8x8 PNG, so that "Try it out" in /docs and schema-driven tests send a real image.
EXAMPLE_QUERY = {
    "image_base64": "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFUlEQVR42mM8YaPBgA0wMeAAg1"
    "MCAO+wATws8x7vAAAAAElFTkSuQmCC",
    "top_n": 5,
}


def upload_openapi() -> dict[str, Any]:
    """POST /query's request body for /openapi.json (`openapi_extra`): the media types
    `check_media_type` accepts, each with the schema of what `parse_upload` reads from it."""
    binary = TypeAdapter(ImageBytes).json_schema()
    raw = {kind + "*" * kind.endswith("/"): {"schema": binary} for kind in RAW_IMAGE_TYPES}
    return {
        "requestBody": {
            "required": True,
            "content": {
                **raw,
                MULTIPART: {"schema": UploadForm.model_json_schema()},
                JSON: {"schema": ImageQuery.model_json_schema(), "example": EXAMPLE_QUERY},
            },
        }
    }
