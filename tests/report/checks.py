"""Assertions on generated HTML: self-contained, images embedded and decodable."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

from PIL import Image

PNG_PREFIX = "data:image/png;base64,"


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in {"src", "href", "srcset", "data", "action", "poster"}:
                self.urls.append((tag, name, value or ""))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(text: str) -> _Collector:
    c = _Collector()
    c.feed(text)
    c.close()
    return c


def assert_self_contained(text: str) -> list[Image.Image]:
    """No external references, no script, every image an embedded PNG; returns the images."""
    doc = parse(text)
    lowered = text.lower()
    assert "http://" not in lowered and "https://" not in lowered
    assert "script" not in doc.tags and "link" not in doc.tags and "iframe" not in doc.tags
    assert "@import" not in lowered and "url(" not in lowered
    images = []
    for tag, attr, value in doc.urls:
        assert not value.startswith("//"), value
        if tag == "img":
            assert attr == "src" and value.startswith(PNG_PREFIX), value[:60]
            img = Image.open(io.BytesIO(base64.b64decode(value[len(PNG_PREFIX) :], validate=True)))
            img.load()
            assert img.format == "PNG" and img.width > 200 and img.height > 150
            images.append(img)
        else:
            assert ":" not in value.split("/")[0], f"non-relative {attr}: {value}"
    return images
