"""HTML pages rendered from the Jinja2 templates in ``vasrch/templates``.

Every page extends ``base.html.j2``, which inlines ``style.css`` (pages stay self-contained: no
scripts, nothing fetched) and shows images with the ``tile`` macro of ``tiles.html.j2``.
Autoescaping is on and an undefined name is an error, not an empty string.
"""

from __future__ import annotations

import math
import numbers
from functools import cache
from pathlib import Path

import jinja2
from markupsafe import Markup

TEMPLATES_DIR = Path(__file__).parent / "templates"
STYLESHEET = "style.css"


def render(template_name: str, **context: object) -> str:
    """The named template of ``vasrch/templates`` rendered with ``context``."""
    return environment().get_template(template_name).render(**context)


@cache
def environment() -> jinja2.Environment:
    """The shared environment: autoescape on, StrictUndefined, the format filters below."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(number=number, images=images, fmt=fmt)
    env.globals["stylesheet"] = Markup(stylesheet())
    return env


def stylesheet() -> str:
    """The CSS that every page inlines in its <style> element."""
    return (TEMPLATES_DIR / STYLESHEET).read_text(encoding="utf-8")


def number(value: object) -> str:
    """A table value: integers grouped by thousands, other numbers to 4 significant digits (one
    decimal from 1,000 on), NaN as a dash; anything but a number as its text."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    real = float(value)
    if math.isnan(real):
        return "–"
    if real.is_integer() and abs(real) < 1e15:
        return f"{int(real):,}"
    return f"{real:,.1f}" if abs(real) >= 1000 else f"{real:.4g}"


def images(count: int) -> str:
    """'1 image', '2,345 images'."""
    return f"{count:,} image" if count == 1 else f"{count:,} images"


def fmt(value: float, spec: str) -> str:
    """``value`` by the format spec (e.g. ``","`` or ``".3f"``); NaN as a dash."""
    if isinstance(value, float) and math.isnan(value):
        return "–"
    return format(value, spec)
