"""The live dashboard the gateway serves under `/ui/` (docs/operations.md "The dashboard", docs/api.md).

- `sessions.py`: how a browser gets in (one-time login link → session cookie), pure;
- `feed.py`: the event feed (the one seam between the store's changes and the events shown), pure;
- `snapshot.py`: what the page shows, computed from objects in memory, pure;
- `hub.py`: one snapshot builder per gateway, fanned out to at most `SHOAL_UI_MAX_CLIENTS` browsers;
- `routes.py`: `/`, `/ui/`, `/ui/static/*`, `/ui/login`, `/ui/logout`, `/ui/stream` (SSE), `POST /v1/ui/login`;
- `static/`: the page, plain HTML/CSS/JavaScript shipped in the package (no CDN, no build step)."""
