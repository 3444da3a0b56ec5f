"""The HTML of ``cir ui``'s search page, rendered on the server.

One page holds everything: the query form (reference, modification, rerank, number of
results), the current reference, the results as thumbnails in the order Weaviate returned
them, example queries (``cir demo --ui``) and a strip of the collection's images to pick a
reference from. Every image is an embedded JPEG ``data:`` URL and every action is a link or a
form post, so the page needs no JavaScript and no second request.

The elements a test (or a script) looks for carry ids and ``data-*`` attributes: ``#query``
(the form), ``#reference[data-ref]``, ``#results figure.result[data-uuid][data-rank]``,
``#examples a.example``, ``#browse a.pick[data-uuid]`` and ``#error``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

__all__ = ["Example", "PageState", "ResultTile", "Thumb", "page_link", "render_page"]

STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#23395d;color:#fff;padding:10px 18px;font-size:18px}
header small{opacity:.75;margin-left:10px;font-size:13px}
main{padding:14px 18px}
form#query{display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap;background:#fff;
  border:1px solid #ddd;border-radius:8px;padding:12px}
#reference{width:200px;text-align:center;font-size:12px;overflow-wrap:anywhere}
#reference img{max-width:192px;max-height:192px;outline:3px solid #c82828}
#reference .none{width:192px;height:120px;display:flex;align-items:center;
  justify-content:center;background:#eee;color:#777}
.controls{display:flex;flex-direction:column;gap:8px;min-width:340px;flex:1}
.controls input[type=text]{font-size:16px;padding:6px;width:100%;box-sizing:border-box}
button{font-size:16px;padding:6px 18px;background:#23395d;color:#fff;border:0;border-radius:5px}
#error{background:#fde8e8;border:1px solid #d33;color:#8a1c1c;padding:8px;margin:10px 0;
  border-radius:5px}
h2{font-size:16px;margin:16px 0 6px}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:196px;background:#fff;border:1px solid #ddd;border-radius:6px;
  padding:4px;font-size:12px;overflow-wrap:anywhere}
figure img{max-width:192px;max-height:192px;display:block;margin:auto}
figure.target{border:3px solid #2a8a3a}
figcaption .rank{font-weight:bold}
.strip a{display:inline-block;margin:2px}
.strip img{width:72px;height:72px;object-fit:cover;border:1px solid #ccc}
.examples li{margin:3px 0}
.note{color:#666;font-size:12px}
"""


@dataclass(frozen=True)
class Thumb:
    """A stored image shown small: its UUID, a ``data:`` URL and a title."""

    uuid: str
    src: str
    title: str = ""


@dataclass(frozen=True)
class ResultTile:
    """One ranked result: a thumbnail, its rank and scores, and whether it is the example's
    known target (the demo's gallery knows it)."""

    thumb: Thumb
    rank: int
    scores: str
    path: str = ""
    target: bool = False
    first_rank: int | None = None  # its rank in the first stage alone (a reranked query)
    rationale: tuple[str, str] | None = None  # the reference's caption, the change list


@dataclass(frozen=True)
class Example:
    """A ready query of the demo: a stored reference, a modification and (when known) the
    UUID of the image it describes."""

    reference: str
    text: str
    target: str | None = None
    label: str = ""


@dataclass
class PageState:
    """Everything one rendering of the page shows."""

    collection: str
    objects: int | None = None
    reference: str = ""  # what the form sends back: a stored UUID or an upload key
    reference_src: str = ""
    reference_label: str = ""
    text: str = ""
    rerank: bool = False
    limit: int = 10
    max_limit: int = 50
    results: list[ResultTile] | None = None
    excluded: str | None = None
    error: str | None = None
    examples: Sequence[Example] = ()
    browse: list[Thumb] = field(default_factory=list)
    browse_offset: int = 0
    browse_page: int = 12
    browse_more: bool = False


def page_link(**params: object) -> str:
    """A link to the page with these query parameters (empty and false ones left out)."""
    kept = {k: ("1" if v is True else v) for k, v in params.items() if v not in (None, "", False)}
    return "/?" + urlencode(kept) if kept else "/"


def render_page(state: PageState) -> str:
    """The whole page for ``state``."""
    count = "" if state.objects is None else f"{state.objects} images"
    parts = [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>Composed search · {_e(state.collection)}</title><style>{STYLE}</style></head>",
        "<body><header>weaviate-cir · composed image search",
        f"<small>collection {_e(state.collection)} · {count}</small></header><main>",
        _form(state),
    ]
    if state.error:
        parts.append(f'<div id="error" role="alert">{_e(state.error)}</div>')
    if state.results is not None:
        parts.append(_results(state))
    if state.examples:
        parts.append(_examples(state))
    parts.append(_browse(state))
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _form(state: PageState) -> str:
    if state.reference_src:
        picture = (
            f'<img src="{state.reference_src}" alt="reference">'
            f"<div>{_e(state.reference_label)}</div>"
        )
    else:
        picture = '<div class="none">no reference yet</div>'
    checked = " checked" if state.rerank else ""
    return f"""<form id="query" method="post" action="/search" enctype="multipart/form-data">
<div id="reference" data-ref="{_e(state.reference)}">{picture}
<input type="hidden" name="ref" value="{_e(state.reference)}"></div>
<div class="controls">
<label>Reference: upload an image
<input type="file" id="upload" name="upload" accept="image/*"></label>
<span class="note">or pick one below; a result clicked becomes the next reference</span>
<label for="text">Modification</label>
<input type="text" id="text" name="text" value="{_e(state.text)}"
 placeholder="e.g. but red, with long sleeves" autofocus>
<div><label><input type="checkbox" id="rerank" name="rerank" value="1"{checked}>
 rerank (Weaviate's rerank, the service's reranker)</label>
&nbsp; <label>results <input type="number" id="limit" name="limit" min="1"
 max="{state.max_limit}" value="{state.limit}"></label></div>
<div><button type="submit" id="search">Search</button></div>
</div></form>"""


def _results(state: PageState) -> str:
    assert state.results is not None
    left_out = f" · the reference ({state.excluded[:8]}…) is left out" if state.excluded else ""
    heading = (
        f'<h2>Results for “{_e(state.text)}”<span class="note"> · {len(state.results)} in '
        f"Weaviate's order{_e(left_out)} · click one to make it the reference</span></h2>"
    )
    if not state.results:
        return f'<section id="results">{heading}<p>no results</p></section>'
    figures = []
    for tile in state.results:
        link = page_link(ref=tile.thumb.uuid, rerank=state.rerank, limit=state.limit)
        kind = "result target" if tile.target else "result"
        mark = " · target" if tile.target else ""
        first = (
            f' <span class="first-rank">(first stage #{tile.first_rank})</span>'
            if tile.first_rank is not None
            else ""
        )
        why = ""
        if tile.rationale is not None:
            reference, changes = tile.rationale
            why = (
                '<details class="rationale"><summary>why</summary>'
                f"<p>the reference: “{_e(reference)}”</p>"
                f'<p class="changes">the changes to this result: “{_e(changes)}”</p></details>'
            )
        figures.append(
            f'<figure class="{kind}" data-uuid="{tile.thumb.uuid}" data-rank="{tile.rank}"'
            f' data-first-rank="{tile.first_rank or ""}">'
            f'<a href="{_e(link)}" title="{_e(tile.path)}">'
            f'<img src="{tile.thumb.src}" alt="{_e(tile.thumb.title)}"></a>'
            f'<figcaption><span class="rank">#{tile.rank}</span>{first} {_e(tile.scores)}{mark}'
            f"<br>{_e(tile.thumb.title)}{why}</figcaption></figure>"
        )
    return f'<section id="results">{heading}<div class="grid">{"".join(figures)}</div></section>'


def _examples(state: PageState) -> str:
    items = []
    for n, example in enumerate(state.examples, 1):
        link = page_link(ref=example.reference, text=example.text, rerank=state.rerank)
        label = f" ({_e(example.label)})" if example.label else ""
        items.append(
            f'<li><a class="example" href="{_e(link)}">example {n}: “{_e(example.text)}”</a>'
            f"{label}</li>"
        )
    return (
        '<section id="examples"><h2>Example queries (the target is framed green)</h2>'
        f'<ul class="examples">{"".join(items)}</ul></section>'
    )


def _browse(state: PageState) -> str:
    picks = "".join(
        f'<a class="pick" data-uuid="{t.uuid}" title="{_e(t.title)}" '
        f'href="{_e(page_link(ref=t.uuid, browse=state.browse_offset or None))}">'
        f'<img src="{t.src}" alt="{_e(t.title)}"></a>'
        for t in state.browse
    )
    pages = []
    if state.browse_offset > 0:
        back = max(0, state.browse_offset - state.browse_page)
        pages.append(f'<a href="{_e(page_link(ref=state.reference, browse=back))}">previous</a>')
    if state.browse_more:
        ahead = state.browse_offset + state.browse_page
        pages.append(f'<a href="{_e(page_link(ref=state.reference, browse=ahead))}">more</a>')
    return (
        '<section id="browse"><h2>Pick a reference from the collection</h2>'
        f'<div class="strip">{picks or "<p>the collection is empty</p>"}</div>'
        f'<div class="note">{" · ".join(pages)}</div></section>'
    )


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
