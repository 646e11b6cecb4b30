"""`shoal ui`: asks the gateway for a login link (`POST /v1/ui/login`) and prints it on the gateway URL;
refuses an answer that is not a login link."""

from __future__ import annotations

import httpx
import pytest

from shoal.cli import main


def gateway(answer: httpx.Response, seen: list[httpx.Request]) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer

    return httpx.Client(transport=httpx.MockTransport(handle), base_url="https://gw.test:4242")


def test_shoal_ui_prints_the_login_link(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[httpx.Request] = []
    answer = httpx.Response(200, json={"path": "/ui/login?token=abc", "expires_at": 1.0, "expires_in": 60})
    assert main(["--url", "https://gw.test:4242", "ui", "-q"], http=gateway(answer, seen)) == 0
    assert capsys.readouterr().out == "https://gw.test:4242/ui/login?token=abc\n"
    assert [(r.method, r.url.path) for r in seen] == [("POST", "/v1/ui/login")]
    assert main(["--url", "https://gw.test:4242", "ui"], http=gateway(answer, seen)) == 0
    out = capsys.readouterr()
    assert "https://gw.test:4242/ui/login?token=abc" in out.out and "within 60 s" in out.out


def test_shoal_ui_says_why_when_refused(capsys: pytest.CaptureFixture[str]) -> None:
    refused = httpx.Response(403, json={"message": "gateway: dashboard logins are for admins",
                                        "code": "permission_denied"})
    assert main(["--url", "https://gw.test:4242", "ui"], http=gateway(refused, [])) == 1
    assert "for admins" in capsys.readouterr().err
    odd = httpx.Response(200, json={"path": "/elsewhere"})
    assert main(["--url", "https://gw.test:4242", "ui"], http=gateway(odd, [])) == 1
    assert "did not issue a login link" in capsys.readouterr().err
