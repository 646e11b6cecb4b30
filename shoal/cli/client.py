"""The one client of the gateway's REST API (docs/api.md) for every `shoal` command: mutual TLS with the admin
bundle (shoal.cli.identity), error decoding (`{"message","code"}` -> ApiError), and optimistic read-modify-write
retried on stale-version conflicts."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from shoal.cli import identity
from shoal.heap import gc_paused
from shoal.store import wire
from shoal.transport import sync_http_client

DEFAULT_URL = "https://127.0.0.1:4242"


SCALE_ATTEMPTS = 5


def decode(body: bytes) -> Any:
    """A JSON answer of the gateway decoded (orjson, the collector paused); ValueError if it is not JSON."""
    with gc_paused():
        return wire.loads(body)


class CliError(Exception):
    """A failure to report on stderr (exit status 1)."""


class ApiError(CliError):
    """The gateway answered with an error status; `message` is its `{"message": ...}`, `code` its `code`."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    @property
    def stale(self) -> bool:
        """A stale-version refusal (re-read and retry), as opposed to another conflict (name, port, in use)."""
        return self.status == 409 and self.code in (None, "version_conflict")


class Gateway:
    """Synchronous client of the gateway over mutual TLS with the admin client bundle (shoal.cli.identity).
    `http` may be injected (tests use a MockTransport or TestClient)."""

    def __init__(self, url: str, http: httpx.Client | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._owned = http is None
        self.http = http or admin_client(self.url, timeout)

    def request(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None) -> Any:
        try:
            resp = self.http.request(method, path, json=body, params=params)
        except httpx.ConnectError as e:
            raise CliError(f"cannot reach the shoal gateway at {self.url} ({e}); is the cluster running "
                           "(`shoal up`)? Point SHOAL_URL or --url at a gateway.") from e
        except httpx.TimeoutException as e:
            raise CliError(f"the shoal gateway at {self.url} did not answer in time ({type(e).__name__})") from e
        except httpx.HTTPError as e:
            raise CliError(f"talking to the shoal gateway at {self.url} failed: {e}") from e
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, error_message(resp), error_code(resp))
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return decode(resp.content)
        except ValueError as e:
            raise CliError(f"the gateway at {self.url} sent something that is not JSON: {resp.text[:200]!r}") from e

    def get(self, path: str, **params: str) -> Any:
        return self.request("GET", path, params=params or None)

    def items(self, path: str, **params: str) -> list[dict[str, Any]]:
        """A list endpoint's items (`{"items": [...]}` or a bare array)."""
        d = self.get(path, **params)
        items: list[dict[str, Any]] = d.get("items", []) if isinstance(d, dict) else list(d or [])
        return items

    def stream_lines(self, path: str, params: dict[str, Any], what: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Follow an NDJSON stream of the gateway (events, logs): each non-empty line with its decoded record.
        An error status raises ApiError; a broken stream CliError naming `what`."""
        try:
            with self.http.stream("GET", path, params=params, timeout=httpx.Timeout(30.0, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise ApiError(resp.status_code, error_message(resp), error_code(resp))
                for line in resp.iter_lines():
                    if line.strip():
                        yield line, json.loads(line)
        except httpx.HTTPError as e:
            raise CliError(f"the {what} stream from {self.url} broke: {e}") from e

    def stream_records(self, path: str, params: dict[str, str], what: str,
                       headers_out: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """The records of a list answered as NDJSON (`Accept: application/x-ndjson`: `GET /v1/tasks`), read and
        decoded as they arrive (orjson; bytes split on line breaks, no text decoding per line). The answer's
        headers go to `headers_out`. An error status raises ApiError; a broken stream CliError naming `what`."""
        try:
            with self.http.stream("GET", path, params=params, headers={"accept": wire.NDJSON},
                                  timeout=httpx.Timeout(30.0, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise ApiError(resp.status_code, error_message(resp), error_code(resp))
                if headers_out is not None:
                    headers_out.update(resp.headers)
                with gc_paused():  # records decoded as they arrive: no cycles among them (see gc_paused)
                    for line in wire.split_lines(resp.iter_bytes()):
                        yield wire.loads(line)
        except httpx.ConnectError as e:
            raise CliError(f"cannot reach the shoal gateway at {self.url} ({e}); is the cluster running "
                           "(`shoal up`)? Point SHOAL_URL or --url at a gateway.") from e
        except httpx.HTTPError as e:
            raise CliError(f"the {what} stream from {self.url} broke: {e}") from e
        except ValueError as e:
            raise CliError(f"the {what} stream from {self.url} sent a line that is not JSON: {e}") from e

    def close(self) -> None:
        if self._owned:
            self.http.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def admin_client(url: str, timeout: float) -> httpx.Client:
    """An https client presenting the admin bundle; plaintext URLs are refused (the gateway only speaks TLS)."""
    if not url.startswith("https://"):
        raise CliError(f"the gateway URL {url!r} is not https: shoal speaks only mutual TLS (SHOAL_URL, --url; "
                       f"default {DEFAULT_URL})")
    try:
        creds = identity.load_bundle(identity.cert_path())
    except identity.IdentityError as e:
        raise CliError(str(e)) from None
    return sync_http_client(creds, timeout=timeout, base_url=url)


def error_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return f"HTTP {resp.status_code} from the gateway: {resp.text[:200]}"


def error_code(resp: httpx.Response) -> str | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    return str(body["code"]) if isinstance(body, dict) and body.get("code") else None


def gateway_of(args: argparse.Namespace) -> Gateway:
    return Gateway(args.url, getattr(args, "http", None))


def read_modify_write(gw: Gateway, path: str, method: str, body_of: Callable[[dict[str, Any]], Any], *,
                       attempts: int = SCALE_ATTEMPTS,
                       write_path: Callable[[dict[str, Any]], str] | None = None) -> dict[str, Any]:
    """GET `path`, then `method` the body built from what was read; retried on stale-version conflicts."""
    for attempt in range(1, attempts + 1):
        current = gw.get(path)
        body = body_of(current)
        try:
            result: dict[str, Any] = gw.request(method, write_path(current) if write_path else path, body=body)
            return result
        except ApiError as e:
            if not e.stale or attempt == attempts:
                raise
            time.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def default_url() -> str:
    return os.environ.get("SHOAL_URL") or DEFAULT_URL
