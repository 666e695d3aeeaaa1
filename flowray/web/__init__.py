"""The web page's files: one HTML document for every page address, and the static folder
(the page's own ES modules and CSS, and the vendored editor and plot bundles built from
``web/`` at the repository root). The service (:mod:`flowray.service.app`) serves them; this
package holds data only and imports nothing of flowray's, so that the page depends on the
service's HTTP API alone."""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"

# The page runs only its own files: no inline script, no other origin. CodeMirror writes its
# styles at run time, hence 'unsafe-inline' for styles only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def page_document() -> bytes:
    """The HTML document every page address answers (the page's script routes from there)."""
    return (Path(__file__).parent / "page.html").read_bytes()
