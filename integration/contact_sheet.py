"""Contact sheets: a query's reference and its ranked results side by side, as one PNG image
(Pillow) or as one self-contained HTML page (the images embedded as base64 ``data:`` URLs)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

__all__ = [
    "HTML_SIDE",
    "SHEET_FORMATS",
    "SheetLayout",
    "SheetTile",
    "jpeg_data_url",
    "render_html",
    "render_png",
    "thumbnail",
    "write_contact_sheet",
]

SHEET_FORMATS = {".png": "png", ".html": "html", ".htm": "html"}
BACKGROUND = (255, 255, 255)
TILE_BACKGROUND = (236, 236, 236)
REFERENCE_FRAME = (200, 40, 40)
TEXT = (20, 20, 20)
# HTML thumbnails are larger than the PNG's tiles (a page scales them) and JPEG-encoded, so a
# sheet of photos stays a few hundred kilobytes instead of carrying every original.
HTML_SIDE = 384


@dataclass(frozen=True)
class SheetTile:
    """One picture on the sheet and the lines written under it."""

    image: Image.Image
    lines: tuple[str, ...]
    reference: bool = False


@dataclass(frozen=True)
class SheetLayout:
    """Where tile ``i`` lies on a PNG sheet: a grid, row by row, each tile a square of
    ``side`` pixels with ``label_lines`` lines of text under it."""

    tiles: int
    columns: int = 5
    side: int = 224
    pad: int = 10
    line_height: int = 16
    label_lines: int = 3

    @property
    def rows(self) -> int:
        return max(1, -(-self.tiles // self.columns))

    @property
    def cell(self) -> tuple[int, int]:
        """Width and height of one tile with its label and padding."""
        return self.side + self.pad, self.side + self.label_lines * self.line_height + self.pad

    @property
    def size(self) -> tuple[int, int]:
        """The sheet's width and height."""
        cell_w, cell_h = self.cell
        return self.pad + min(self.tiles, self.columns) * cell_w, self.pad + self.rows * cell_h

    def square(self, index: int) -> tuple[int, int, int, int]:
        """The box (left, top, right, bottom) of tile ``index``'s picture square."""
        cell_w, cell_h = self.cell
        row, column = divmod(index, self.columns)
        left, top = self.pad + column * cell_w, self.pad + row * cell_h
        return left, top, left + self.side, top + self.side


def thumbnail(image: Image.Image, side: int) -> Image.Image:
    """``image`` scaled to fit a ``side`` x ``side`` square, aspect ratio kept (RGB)."""
    return ImageOps.contain(image.convert("RGB"), (side, side), Image.Resampling.LANCZOS)


def jpeg_data_url(image: Image.Image, side: int) -> str:
    """``image`` as a thumbnail of at most ``side`` pixels, JPEG-encoded in a ``data:`` URL
    (self-contained HTML: no second request, no file to serve)."""
    buffer = io.BytesIO()
    thumbnail(image, side).save(buffer, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_png(tiles: Sequence[SheetTile], layout: SheetLayout | None = None) -> Image.Image:
    """The sheet as one image: each picture centred in its square, its lines under it, the
    reference framed."""
    layout = layout or SheetLayout(len(tiles))
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for index, tile in enumerate(tiles):
        left, top, right, bottom = layout.square(index)
        draw.rectangle((left, top, right - 1, bottom - 1), fill=TILE_BACKGROUND)
        picture = thumbnail(tile.image, layout.side)
        sheet.paste(
            picture,
            (left + (layout.side - picture.width) // 2, top + (layout.side - picture.height) // 2),
        )
        if tile.reference:
            frame = (left - 3, top - 3, right + 2, bottom + 2)  # outside the picture
            draw.rectangle(frame, outline=REFERENCE_FRAME, width=3)
        for n, line in enumerate(tile.lines[: layout.label_lines]):
            text = _fit(draw, line, font, layout.side)
            draw.text((left, bottom + 2 + n * layout.line_height), text, fill=TEXT, font=font)
    return sheet


def render_html(tiles: Sequence[SheetTile], title: str) -> str:
    """The sheet as a self-contained HTML page: one ``<img>`` per tile, embedded as a JPEG
    ``data:`` URL, with its lines as the caption."""
    figures = []
    for tile in tiles:
        source = jpeg_data_url(tile.image, HTML_SIDE)
        caption = "<br>".join(html.escape(line) for line in tile.lines)
        kind = ' class="reference"' if tile.reference else ""
        alt = html.escape(tile.lines[-1] if tile.lines else "", quote=True)
        figures.append(
            f'<figure{kind}><img src="{source}" alt="{alt}"><figcaption>{caption}'
            "</figcaption></figure>"
        )
    style = (
        "body{font-family:sans-serif;margin:1em}"
        ".sheet{display:flex;flex-wrap:wrap;gap:12px}"
        "figure{margin:0;width:240px}figure img{max-width:240px;max-height:240px}"
        "figcaption{font-size:12px;overflow-wrap:anywhere}"
        "figure.reference img{outline:3px solid #c82828}"
    )
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head>\n"
        f'<body><h1>{html.escape(title)}</h1>\n<div class="sheet">\n'
        + "\n".join(figures)
        + "\n</div></body></html>\n"
    )


def write_contact_sheet(path: str | Path, tiles: Sequence[SheetTile], title: str) -> Path:
    """Write ``tiles`` to ``path``: a PNG image for ``.png``, an HTML page for ``.html`` or
    ``.htm``; any other suffix is a ``ValueError``."""
    path = Path(path)
    kind = SHEET_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"a contact sheet is .png or .html, not {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "png":
        render_png(tiles).save(path, format="PNG")
    else:
        path.write_text(render_html(tiles, title), encoding="utf-8")
    return path


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """``text`` cut in the middle (``...``) to fit ``width`` pixels: a path keeps its start
    and its file name."""
    if draw.textlength(text, font=font) <= width:
        return text
    head, tail = text[: len(text) // 2], text[len(text) // 2 :]
    while head or tail:
        if len(head) >= len(tail):
            head = head[:-1]
        else:
            tail = tail[1:]
        if draw.textlength(f"{head}...{tail}", font=font) <= width:
            break
    return f"{head}...{tail}"
