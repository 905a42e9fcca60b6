"""The issuer's documents are fetched from the target's host or the loopback only, unless
the user opts in; a redirect to another host is never followed."""

import http.server
import threading

import pytest

from harness.plans.jwks import FetchError, Reach, fetch_json


@pytest.mark.parametrize(
    ("url", "reach", "allowed"),
    [
        ("https://127.0.0.1:8443/jwks.json", Reach("10.1.2.3"), True),
        ("http://[::1]:80/jwks.json", Reach("10.1.2.3"), True),
        ("http://localhost/jwks.json", Reach(""), True),
        ("https://records.example.org/jwks.json", Reach("records.example.org"), True),
        ("https://RECORDS.example.org/jwks.json", Reach("records.example.org"), True),
        ("https://idp.example.com/jwks.json", Reach("records.example.org"), False),
        ("https://idp.example.com/jwks.json", Reach("records.example.org", anywhere=True), True),
    ],
)
def test_reach(url, reach, allowed):
    assert (reach.refusal(url) == "") is allowed


def test_a_refused_url_is_never_contacted_and_says_how_to_allow_it():
    with pytest.raises(FetchError, match=r"safety\.allow_issuer_fetch"):
        fetch_json("https://idp.example.com/.well-known/openid-configuration", Reach("t.test"))


@pytest.fixture
def redirector():
    """A loopback server that redirects /off to another host and /same to /keys."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/keys":
                body = b'{"keys": []}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            target = "/keys" if self.path == "/same" else "http://idp.example.com/keys"
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_redirects_are_followed_only_on_the_same_host(redirector):
    assert fetch_json(f"{redirector}/same", Reach("t.test")) == {"keys": []}
    with pytest.raises(FetchError, match="redirected to another host"):
        fetch_json(f"{redirector}/off", Reach("t.test", anywhere=True))
