"""What a model string names: one reading for pricing, pool ``models:`` and metric labels.

Claude Code writes the id its platform uses: ``claude-sonnet-4-5-20250929`` on Anthropic's
API, ``us.anthropic.claude-sonnet-4-5-20250929-v1:0`` or ``global.anthropic.claude-opus-4-6-v1``
on Bedrock, ``claude-sonnet-4-5@20250929`` on Vertex; users write ``claude-sonnet-4-5``,
``claude-sonnet-4.5`` or ``claude-sonnet-4-5-latest``. :func:`parse` takes each apart into
the undated name, the snapshot date and the platform, so every stage agrees on who a
request was for. Pure: no I/O, no price data.

    >>> parse("us.anthropic.claude-sonnet-4-5-20250929-v1:0")
    ModelName(name='claude-sonnet-4-5', date='20250929', platform='bedrock', regional=True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["ModelName", "is_claude", "matches", "parse"]

ANTHROPIC, BEDROCK, VERTEX = "anthropic", "bedrock", "vertex"

# [arn:aws:bedrock:REGION:ACCOUNT:inference-profile/][GEO.]anthropic.NAME[-vN][:N][:CONTEXT]
_BEDROCK = re.compile(
    r"^(?:arn:aws[\w-]*:bedrock:[^/]*/)?(?:(?P<geo>[a-z]{2,6}(?:-gov)?)\.)?anthropic\.(?P<rest>.+?)"
    r"(?:-v\d+)?(?::\d+)?(?::\d+[km]?)?$")
_VERTEX = re.compile(r"^(?P<rest>.+)@(?P<date>\d{8}|latest)$")
_DATE = re.compile(r"^(?P<rest>.+?)-(?:(?P<compact>20\d{6})|(?P<dashed>20\d\d-\d\d-\d\d)|latest)$")
_ZERO_MINOR = re.compile(r"^(?P<rest>.*-\d+)-0$")  # claude-opus-4-0 is claude-opus-4


@dataclass(frozen=True, slots=True)
class ModelName:
    """A model string taken apart; ``name`` is lower-case, undated and without platform parts."""

    name: str
    date: str | None = None  # the snapshot date, YYYYMMDD, when the id carries one
    platform: str = ANTHROPIC
    regional: bool = False  # a Bedrock endpoint in one geography (not ``global.``)

    @property
    def ref(self) -> str:
        """The Anthropic API spelling of the same model: ``claude-sonnet-4-5-20250929``."""
        return f"{self.name}-{self.date}" if self.date else self.name


@lru_cache(maxsize=4096)
def parse(model: str) -> ModelName:
    s = model.strip().lower()
    platform, regional, date = ANTHROPIC, False, None
    if (m := _BEDROCK.match(s)) is not None:
        platform, s = BEDROCK, m["rest"]
        regional = m["geo"] != "global"
    elif (m := _VERTEX.match(s)) is not None:
        platform, s = VERTEX, m["rest"]
        date = m["date"] if m["date"] != "latest" else None
    if date is None and (m := _DATE.match(s)) is not None:
        s = m["rest"]
        date = m["compact"] or (m["dashed"].replace("-", "") if m["dashed"] else None)
    s = s.replace(".", "-")
    if (m := _ZERO_MINOR.match(s)) is not None:
        s = m["rest"]
    return ModelName(s, date, platform, regional)


def is_claude(model: str) -> bool:
    """Whether the string names a Claude model at all (a proxy may log other vendors' models)."""
    return "claude" in model.lower()


def matches(pattern: str, model: str) -> bool:
    """Whether a configured name covers a logged model id.

    An undated pattern covers every snapshot, alias and platform spelling of its model
    (``claude-sonnet-4-5`` covers ``claude-sonnet-4-5-20250929``, ``-latest``, ``@20250929``
    and ``us.anthropic.claude-sonnet-4-5-20250929-v1:0``), but not another model
    (``claude-sonnet-4`` does not cover ``claude-sonnet-4-5``); a dated pattern covers its
    snapshot alone.
    """
    if pattern == model:
        return True
    p, m = parse(pattern), parse(model)
    return p.name == m.name and (p.date is None or p.date == m.date)
