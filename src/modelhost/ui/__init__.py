"""The web UI: server-rendered pages over the same API functions and operations.

``session.py`` signs users in (an encrypted cookie that holds a per-session API key) and checks
CSRF; ``render.py`` turns one context into HTML or, for ``Accept: application/json``, its JSON
twin; ``pages.py`` has the pages and ``actions.py`` the forms that change things. Templates and
static files are package data. See docs/ui.md.
"""
