"""Sign in: a user name and personal token, or the organisation's identity provider."""

from __future__ import annotations

from catalog_ui.parts import go, require_session

require_session()
go("catalog")  # signed in already: on to the catalog
