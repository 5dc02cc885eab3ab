"""What a hostile caller tries, by class, against the real server (studio/ui/guard.py): every route
of this Gradio version's table without a login; every route form that names a file, for another
user's image and the history database; requests from another site (with the victim's cookie, and
with no login at all); CORS; a DNS-rebinding host name; bodies over the limit."""

import dataclasses
import os
import re
import sqlite3
from urllib.parse import quote

import pytest
import requests
from PIL import Image

from studio.ui import close_server
from tests.test_shared import FAST, launch

EVIL = "http://evil.example"
PNG_MAGIC, SQLITE_MAGIC = b"\x89PNG", b"SQLite format 3"


def serve(settings, tmp_path_factory, **changes):
    from studio.core import Studio

    studio = Studio(dataclasses.replace(settings, outputs_dir=tmp_path_factory.mktemp("secure"), **changes))
    demo, url = launch(studio)
    return studio, demo, url


@pytest.fixture(scope="module")
def logins_server(settings, tmp_path_factory):
    """Two logins; bound as for the LAN (--listen), so any Host name is served and Gradio's own CORS
    layer would echo any Origin."""
    studio, demo, url = serve(settings, tmp_path_factory, auth=(("ann", "pw-ann"), ("bob", "pw-bob")),
                              host="0.0.0.0")
    yield studio, demo, url
    close_server(demo)


def session_of(url: str, user: str) -> requests.Session:
    session = requests.Session()
    assert session.post(f"{url}login", data={"username": user, "password": f"pw-{user}"}).ok
    return session


def route_table(app) -> list[tuple[str, set[str]]]:
    """(path, methods) of every route the running app serves, routers included by Gradio opened up."""
    table = []

    def walk(routes, prefix: str):
        for route in routes:
            if hasattr(route, "original_router"):  # FastAPI's included router
                walk(route.original_router.routes, prefix + route.include_context.prefix)
            elif hasattr(route, "path"):
                table.append((prefix + route.path, set(getattr(route, "methods", None) or {"GET"})))
    walk(app.routes, "")
    return table


def _filled(path: str) -> str:
    """A route's path with its parameters filled: a number where the route wants one."""
    return re.sub(r"\{(\w+)(:(\w+))?\}", lambda m: "1" if m.group(3) == "int" else "x", path)


# --- anonymous callers ------------------------------------------------------------------------------

ANONYMOUS_OK = {"/", "/login", "/login/", "/logout", "/favicon.ico", "/theme.css", "/robots.txt", "/manifest.json",
                "/gradio_api/theme.css", "/gradio_api/startup-events"}  # startup-events: loopback callers only


@pytest.mark.slow  # about 100 requests
def test_every_route_in_gradios_table_refuses_an_anonymous_caller(logins_server):
    """Read from the running app's own route table, not a list written here: a route a new Gradio
    adds is refused too."""
    _, demo, url = logins_server
    tried = 0
    for route_path, methods in route_table(demo.server_app):
        path = _filled(route_path)
        for method in sorted(methods):
            if method == "OPTIONS":
                continue
            answer = requests.request(method, url.rstrip("/") + path, json={}, timeout=10, allow_redirects=False)
            tried += 1
            allowed = path in ANONYMOUS_OK or path.startswith(("/assets/", "/svelte/", "/static/", "/pwa_icon"))
            if allowed:
                assert answer.status_code != 401, (method, path)
            else:
                assert answer.status_code == 401, (method, path, answer.status_code, answer.text[:200])
                assert method == "HEAD" or "asks for a login" in answer.json()["detail"]
    assert tried > 60  # the whole table: Gradio's routes and A1111's


def test_the_routes_the_audit_named_are_refused_anonymously(logins_server):
    _, _, url = logins_server
    for method, path in (("POST", "gradio_api/cancel"), ("POST", "gradio_api/reset"), ("GET", "gradio_api/runs"),
                         ("GET", "gradio_api/heartbeat/abc"), ("GET", "openapi.json"),
                         ("GET", "gradio_api/openapi.json"), ("GET", "gradio_api/info"), ("GET", "config"),
                         ("POST", "gradio_api/queue/join"), ("GET", "sdapi/v1/options"),
                         ("POST", "sdapi/v1/interrupt")):
        answer = requests.request(method, url + path, json={"session_hash": "x", "event_id": "y"}, timeout=10)
        assert answer.status_code == 401, (method, path, answer.text[:200])


def test_the_login_page_describes_no_api_to_an_anonymous_caller(logins_server):
    _, _, url = logins_server
    anonymous = requests.get(url + "?all_endpoints=true", timeout=10)
    assert anonymous.status_code == 200 and '"auth_required":true' in anonymous.text.replace(" ", "")
    assert "window.gradio_api_info = {};" in anonymous.text and "txt2img" not in anonymous.text
    ann = session_of(url, "ann")
    assert "txt2img" in ann.get(url, timeout=10).text  # the page itself is whole for a login
    # Gradio's run history (prompts kept in the browser or a Hub bucket, beside the History tab) is off.
    assert ann.get(f"{url}gradio_api/runs", timeout=10).status_code == 404


def test_a_wrong_basic_login_is_refused_like_none(logins_server):
    _, _, url = logins_server
    assert requests.get(f"{url}sdapi/v1/options", auth=("ann", "wrong"), timeout=10).status_code == 401
    assert requests.get(f"{url}sdapi/v1/options", auth=("ann", "pw-ann"), timeout=10).status_code == 200


# --- files of other users ---------------------------------------------------------------------------

def _forms(target: str) -> list[str]:
    """Every way this Gradio's two file routes can be asked for `target`."""
    relative = os.path.relpath(target, os.getcwd())  # Gradio resolves a relative path from its cwd
    return [f"gradio_api/file={target}", f"gradio_api/file/{target}", f"gradio_api/file={relative}",
            f"gradio_api/file/{relative}", f"gradio_api/file={quote(target, safe='')}",
            f"gradio_api/file/{quote(target, safe='')}", f"gradio_api/file={quote(quote(target, safe=''), safe='')}",
            f"gradio_api/file={target.replace('/', '//')}", f"gradio_api/file={target}?x=1"]


@pytest.mark.slow  # a generation and about 80 requests
def test_no_route_form_serves_an_output_or_the_history_database(logins_server):
    studio, demo, url = logins_server
    ann, bob = session_of(url, "ann"), session_of(url, "bob")
    job = ann.post(f"{url}sdapi/v1/txt2img", json={**FAST, "prompt": "ann's secret garden", "steps": 2}, timeout=120)
    assert job.status_code == 200
    saved = next(p for p in studio.settings.outputs_dir.rglob("*.png")
                 if "ann's secret garden" in Image.open(p).info.get("parameters", ""))
    database = studio.settings.outputs_dir / "history.sqlite3"
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM generations").fetchone()[0] >= 1
    for target in (str(saved), str(database)):
        for form in _forms(target):
            for session in (bob, ann):  # nobody reads a file by its path, not even its owner
                for method, headers in (("GET", {}), ("GET", {"Range": "bytes=0-20"}), ("HEAD", {})):
                    answer = session.request(method, url + form, headers=headers, timeout=10)
                    assert answer.status_code in (403, 404), (form, method, headers, answer.status_code)
                    assert not answer.content.startswith((PNG_MAGIC, SQLITE_MAGIC))
    # And every route of the table that takes a path, asked for the same files.
    path_routes = [path for path, methods in route_table(demo.server_app) if ":path}" in path and "GET" in methods]
    assert len(path_routes) >= 5  # file=, file/, proxy=, assets, static, ...
    for route_path in path_routes:
        for target in (str(saved), str(database)):
            path = re.sub(r"\{\w+:path\}", target.lstrip("/"), route_path)
            path = re.sub(r"\{(\w+)(:\w+)?\}", "x", path)
            answer = bob.get(url.rstrip("/") + path, timeout=10)
            assert not answer.content.startswith((PNG_MAGIC, SQLITE_MAGIC)), route_path


@pytest.mark.slow
def test_the_page_shows_its_owner_a_copy_with_the_parameters_kept(logins_server):
    from gradio_client import Client

    studio, _, url = logins_server
    gallery, info = Client(url, auth=("ann", "pw-ann"), verbose=False, download_files=False).predict(
        prompt="ann's harbour", steps=2, seed=4, **{k: v for k, v in FAST.items() if k != "prompt"},
        api_name="/txt2img")
    served = session_of(url, "ann").get(gallery[0]["image"]["url"], timeout=10)
    assert served.status_code == 200 and served.content.startswith(PNG_MAGIC)
    assert str(studio.settings.outputs_dir) not in gallery[0]["image"]["url"]
    import io
    assert Image.open(io.BytesIO(served.content)).info["parameters"] == info


# --- other sites ------------------------------------------------------------------------------------

def _lan(url: str) -> dict:
    """Headers of a request sent to the studio by its LAN name, as a browser on the LAN would."""
    return {"Host": f"studio.lan:{url.rstrip('/').rsplit(':', 1)[1]}"}


def test_a_page_of_another_site_cannot_use_the_victims_cookie(logins_server):
    studio, _, url = logins_server
    bob = session_of(url, "bob")
    # The browser sends bob's cookie with a request to the studio's name, whoever made the page.
    lan = {**_lan(url), "Cookie": "; ".join(f"{name}={value}" for name, value in bob.cookies.items())}
    before = studio.history.count("user:bob") + studio.history.count("api:bob")
    cross = {**lan, "Origin": EVIL}
    attempts = [
        ("POST", "sdapi/v1/txt2img", {"data": '{"prompt": "csrf", "steps": 1, "width": 64, "height": 64}',
                                      "headers": {**cross, "Content-Type": "text/plain"}}),
        ("POST", "sdapi/v1/txt2img", {"json": {"prompt": "csrf", "steps": 1}, "headers": cross}),
        ("POST", "sdapi/v1/options", {"data": '{"sd_model_checkpoint": "tiny-sdxl"}',
                                      "headers": {**cross, "Content-Type": "text/plain"}}),
        ("POST", "sdapi/v1/interrupt", {"headers": cross}),
        ("POST", "login", {"data": {"username": "bob", "password": "pw-bob"}, "headers": cross}),
        ("POST", "gradio_api/upload", {"files": {"files": ("a.png", b"x", "image/png")}, "headers": cross}),
        ("POST", "gradio_api/queue/join", {"json": {"data": [], "fn_index": 0, "session_hash": "x"}, "headers": cross}),
        ("GET", "config", {"headers": cross}),
        ("GET", "sdapi/v1/options", {"headers": cross}),
        ("GET", "gradio_api/info", {"headers": {**lan, "Origin": "null"}}),
    ]
    for method, path, options in attempts:
        answer = requests.request(method, url + path, timeout=30, **options)
        assert answer.status_code == 403, (method, path, answer.status_code, answer.text[:200])
        assert "refuses requests from other sites" in answer.json()["detail"]
        assert answer.headers.get("access-control-allow-origin") in (None, ""), path
    options = requests.get(f"{url}sdapi/v1/options", headers=lan).json()
    assert options.get("sd_model_checkpoint") == "tiny", options
    assert studio.history.count("user:bob") + studio.history.count("api:bob") == before
    # The studio's own page (Origin = its own address) is served as before.
    own = requests.get(f"{url}config", headers={**lan, "Origin": f"http://{lan['Host']}"}, timeout=10)
    assert own.status_code == 200 and "components" in own.json()


def test_a_preflight_from_another_site_gets_no_cors_headers(logins_server):
    _, _, url = logins_server
    for path in ("sdapi/v1/options", "config", "gradio_api/queue/join"):
        answer = requests.options(url + path, headers={**_lan(url), "Origin": EVIL,
                                                       "Access-Control-Request-Method": "POST",
                                                       "Access-Control-Request-Headers": "content-type"}, timeout=10)
        assert answer.status_code == 403 and "access-control-allow-origin" not in answer.headers, path


def test_without_logins_another_site_still_cannot_post(server, settings):
    """No cookie to steal, but the studio itself is the prize: a page elsewhere must not generate,
    switch the model or interrupt."""
    for path, data in (("sdapi/v1/txt2img", '{"prompt": "x", "steps": 1}'), ("sdapi/v1/interrupt", ""),
                       ("sdapi/v1/options", '{"sd_model_checkpoint": "tiny-sdxl"}')):
        answer = requests.post(server + path, data=data, headers={"Origin": EVIL, "Content-Type": "text/plain"},
                               timeout=10)
        assert answer.status_code == 403, path


def test_sdapi_reads_only_json_bodies(server):
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": content_type} if content_type else {}
        answer = requests.post(f"{server}sdapi/v1/txt2img", data='{"prompt": "x", "steps": 1}', headers=headers,
                               timeout=10)
        assert answer.status_code == 422 and "application/json" in answer.json()["detail"], content_type


@pytest.mark.slow  # its own server
def test_listed_origins_get_cors_and_others_do_not(settings, tmp_path_factory):
    _, demo, url = serve(settings, tmp_path_factory, cors_allow=("https://app.example",))
    try:
        preflight = requests.options(f"{url}sdapi/v1/options", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"}, timeout=10)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert preflight.headers["access-control-allow-credentials"] == "true"
        answer = requests.get(f"{url}sdapi/v1/options", headers={"Origin": "https://app.example"}, timeout=10)
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "https://app.example"
        other = requests.get(f"{url}sdapi/v1/options", headers={"Origin": "https://app.example.evil"}, timeout=10)
        assert other.status_code == 403 and "access-control-allow-origin" not in other.headers
    finally:
        close_server(demo)


def test_a_loopback_studio_answers_only_to_loopback_names(server):
    """A DNS-rebinding page reaches 127.0.0.1 under its own name (Host and Origin agree there)."""
    port = server.rstrip("/").rsplit(":", 1)[1]
    for name in ("rebind.evil.example", "192.168.1.20"):
        answer = requests.get(f"{server}config", headers={"Host": f"{name}:{port}", "Origin": f"http://{name}:{port}"},
                              timeout=10)
        assert answer.status_code == 403 and "does not answer to the name" in answer.json()["detail"], name
    for name in ("localhost", "127.0.0.1"):
        assert requests.get(f"{server}config", headers={"Host": f"{name}:{port}"}, timeout=10).status_code == 200


def test_a_bad_cors_origin_flag_is_an_error_at_start():
    import app

    assert app.main(["--preset", "tiny", "--cors-allow", "app.example/path"]) == 2


# --- bodies -----------------------------------------------------------------------------------------

@pytest.mark.slow  # three 81 MB bodies
def test_a_body_over_the_limit_is_refused_before_it_is_read(server, settings):
    limit = settings.max_body_bytes
    for path in ("sdapi/v1/txt2img", "gradio_api/queue/join", "gradio_api/upload"):
        answer = requests.post(server + path, data=b"{" + b" " * limit + b"}",
                               headers={"Content-Type": "application/json"}, timeout=60)
        assert answer.status_code == 413 and "at most" in answer.json()["detail"], path
    assert requests.get(f"{server}sdapi/v1/options", timeout=10).status_code == 200  # still serving


@pytest.mark.slow  # its own server
def test_a_share_link_is_answered_under_its_own_name(settings, tmp_path_factory):
    """gradio.live forwards its visitors to the loopback studio with its own Host name."""
    _, demo, url = serve(settings, tmp_path_factory, share=True)
    try:
        port = url.rstrip("/").rsplit(":", 1)[1]
        host = "0123abcd.gradio.live"
        answer = requests.get(f"{url}config", headers={"Host": host, "Origin": f"https://{host}"}, timeout=10)
        assert answer.status_code == 200
        other = requests.get(f"{url}config", headers={"Host": f"127.0.0.1:{port}", "Origin": EVIL}, timeout=10)
        assert other.status_code == 403
    finally:
        close_server(demo)


@pytest.mark.slow  # two servers
def test_a_page_on_another_port_of_the_same_host_is_another_site(logins_server, server):
    """A browser sends Host without a port on 80/443 (behind a proxy, or --port 80): a page on
    :3000 of that host (a dev server, a notebook) must not ride the user's cookie."""
    _, _, url = logins_server
    bob = session_of(url, "bob")
    cookie = "; ".join(f"{name}={value}" for name, value in bob.cookies.items())
    for host, origin in (("studio.lan", "http://studio.lan:8888"), ("studio.lan", "https://studio.lan:8443"),
                         ("studio.lan:80", "http://studio.lan:3000")):
        for method, path in (("GET", "sdapi/v1/options"), ("POST", "sdapi/v1/interrupt")):
            answer = requests.request(method, url + path, headers={"Host": host, "Origin": origin, "Cookie": cookie},
                                      timeout=10)
            assert answer.status_code == 403 and "access-control-allow-origin" not in answer.headers, (host, origin)
    same = requests.get(f"{url}sdapi/v1/options", headers={"Host": "studio.lan", "Origin": "https://studio.lan",
                                                           "Cookie": cookie}, timeout=10)
    assert same.status_code == 200  # the proxy's own page (https on 443, Host without a port)
    loopback = requests.get(f"{server}config", headers={"Host": "localhost", "Origin": "http://localhost:3000"},
                            timeout=10)
    assert loopback.status_code == 403


@pytest.mark.slow  # two servers
def test_malformed_host_and_origin_headers_get_400_without_a_traceback(logins_server, server, capfd):
    _, _, url = logins_server
    port = url.rstrip("/").rsplit(":", 1)[1]
    for headers in ({"Origin": "http://127.0.0.1:99999"}, {"Origin": "http://127.0.0.1:abc"}, {"Origin": "http://[::1"},
                    {"Host": "127.0.0.1:abc", "Origin": "http://127.0.0.1:abc"}, {"Host": "[::1"},
                    {"X-Forwarded-Host": "[::1", "Origin": "http://x.example"}):
        for base in (url, server):
            answer = requests.get(f"{base}config", headers={"Host": f"127.0.0.1:{port}", **headers}, timeout=10)
            assert answer.status_code in (400, 401, 403), (headers, answer.status_code)  # never a 500
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


@pytest.mark.slow  # a 90 MB body
def test_a_chunked_body_over_the_limit_gets_413_from_the_a1111_api(server, settings, capfd):
    def chunks():
        for _ in range(settings.max_body_bytes // 2**20 + 10):
            yield b" " * 2**20
    answer = requests.post(f"{server}sdapi/v1/txt2img", data=chunks(), timeout=120,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and "limit" in answer.json()["detail"]
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert requests.get(f"{server}sdapi/v1/options", timeout=10).status_code == 200


def test_an_image_far_over_the_pixel_limit_names_the_limit():
    """Pillow's own guard fires inside open() above twice its limit: the message still says what to do."""
    from studio.errors import RequestError
    from studio.imaging import open_image
    from tests.test_fuzz import _png_header_only

    with pytest.raises(RequestError, match="up to 50 MP. Scale it down first."):
        open_image(_png_header_only(30000, 30000), "Image")


def test_a_login_is_told_apart_by_basic_auth_or_cookie_with_any_characters():
    """One function names the caller for the guard and the A1111 API; a login with non-ASCII
    characters works (compare_digest refuses non-ASCII str) and a wrong Basic header decides alone."""
    import base64

    from starlette.datastructures import Headers

    from studio.logins import login_of

    class Tokens:  # what Gradio's App holds: its cookie id and the session tokens it handed out
        cookie_id, tokens = "c1", {"tok": "ann"}

    logins = (("jörg", "pässwort"), ("ann", "pw-ann"))

    def basic(user, password):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    assert login_of(Headers({"authorization": basic("jörg", "pässwort")}), logins, Tokens) == "jörg"
    assert login_of(Headers({"authorization": basic("jörg", "wrong")}), logins, Tokens) is None
    assert login_of(Headers({"cookie": "access-token-unsecure-c1=tok"}), logins, Tokens) == "ann"
    assert login_of(Headers({"cookie": "access-token-c1=forged"}), logins, Tokens) is None
    assert login_of(Headers({"authorization": basic("ann", "x"), "cookie": "access-token-c1=tok"}), logins,
                    Tokens) is None
    assert login_of(Headers({"authorization": "Basic !!!"}), logins, Tokens) is None
