"""HTML pages rendered from ``hub/access/templates`` (Jinja2, every value HTML-escaped): the audit report
and the public transparency page."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from hub.access.policy import PolicySettings

_ENVIRONMENT = Environment(loader=PackageLoader("hub.access", "templates"), autoescape=select_autoescape(["html"]))


def render(template: str, **context: Any) -> str:
    return _ENVIRONMENT.get_template(template).render(**context)


def render_transparency(figures: dict[str, Any], policy: PolicySettings) -> str:
    """The public page: the agency's ALPR use in counts (``ComplianceService.transparency``) beside the
    usage and privacy policy the hub enforces (1798.90.51(b): posted for the public). No ALPR data."""
    return render("transparency.html", figures=figures, policy=policy)
