"""The campaign review page: `page` collects a ledger into the page's data and renders the
self-contained HTML (`templates/report.html.j2`); `svg` draws its plots."""

from geoscreen.agent.report.page import collect, render_report

__all__ = ["collect", "render_report"]
