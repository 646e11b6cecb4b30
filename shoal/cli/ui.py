"""`shoal ui`: a one-time login link to the gateway's dashboard (docs/operations.md "The dashboard").

The admin bundle asks the gateway for a login token (`POST /v1/ui/login`); the link is the gateway URL
(SHOAL_URL / --url) plus the login path. Opened within its lifetime (60 s by default), once, it gives that
browser a session cookie for the dashboard. `--open` hands the link to the desktop's browser."""

from __future__ import annotations

import argparse
import sys
import webbrowser

from shoal.cli.commands import CliError, gateway_of


def cmd_ui(a: argparse.Namespace) -> int:
    gw = gateway_of(a)
    try:
        reply = gw.request("POST", "/v1/ui/login")
    finally:
        gw.close()
    if not isinstance(reply, dict) or not str(reply.get("path", "")).startswith("/ui/login?token="):
        raise CliError(f"the gateway at {gw.url} did not issue a login link: {reply!r}")
    link = gw.url + reply["path"]
    ttl = float(reply.get("expires_in") or 0)
    if a.quiet:
        print(link)
    else:
        print(f"Open this link within {ttl:g} s (it works once):\n\n  {link}\n")
        print("The gateway's certificate is signed by the cluster's own root (ca.pem in the client bundle): "
              "import it into the browser, or expect a warning.", file=sys.stderr)
    if a.open and not webbrowser.open(link):
        raise CliError("no browser could be started here: open the link yourself")
    return 0


def add_parsers(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    ui = sub.add_parser("ui", parents=[parent], help="print a one-time login link to the web dashboard")
    ui.add_argument("-q", "--quiet", action="store_true", help="only print the link (to stdout)")
    ui.add_argument("--open", action="store_true", help="also open the link in the desktop's browser")
    ui.set_defaults(func=cmd_ui)
