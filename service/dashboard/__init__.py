"""The internal web dashboard, served by the API at ``/dashboard`` (server-rendered Jinja2 pages).

Read-only views work without JavaScript; a small script adds auto-refresh. Sign-in exchanges an API key
for a signed session cookie scoped to the key's project, exactly like the API's Bearer authentication.
"""

from service.dashboard.router import make_router

__all__ = ["make_router"]
