"""README.md's "Using it from Python / FastAPI" section, run as written.

Its python blocks are extracted and executed; the FastAPI one is then
driven with TestClient (its shm region names are replaced with ones of this
test, so that no region of a real service is touched, and removed after).
Its shell blocks: `pip install ./python` after `make` is how `make
test-python` installs the package (test_packaging checks the bundle), and
the uvicorn/gunicorn command lines are the ones test_servers runs.
"""

import os
import re
import shlex

from fastapi.testclient import TestClient

import libratelimit
import test_servers

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")


def section() -> str:
    text = open(README, encoding="utf-8").read()
    start = text.index("## Using it from Python / FastAPI")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def blocks(lang: str):
    return re.findall(r"```" + lang + r"\n(.*?)```", section(), re.S)


def test_the_section_sits_before_the_llm_section():
    text = open(README, encoding="utf-8").read()
    assert text.index("## Using it from Python / FastAPI") < text.index("## Limiting an LLM API")
    assert len(blocks("python")) == 2 and len(blocks("sh")) == 2


def test_the_api_example_runs():
    code = blocks("python")[0]
    exec(compile(code, "README.md (Python API example)", "exec"), {})


def test_the_fastapi_example_runs():
    code = blocks("python")[1]
    assert 'name=/api"' in code and 'name=/api-logins"' in code
    tag = f"/rl-py-readme-{os.getpid()}"
    code = code.replace("name=/api-logins", f"name={tag}-logins").replace('name=/api"', f'name={tag}"')
    ns: dict = {}
    try:
        exec(compile(code, "README.md (FastAPI example)", "exec"), ns)
        client = TestClient(ns["app"])
        logins = [client.post("/login") for _ in range(6)]
        assert [r.status_code for r in logins] == [200] * 5 + [429]
        assert logins[0].json() == {"ok": True}
        # the route's own limit's headers, not the middleware's as well
        assert logins[0].headers.get_list("x-ratelimit-limit") == ["5"]
        assert logins[5].json()["detail"]["error"] == "rate_limited"
        m = client.get("/metrics")
        assert m.status_code == 200 and "x-ratelimit-limit" not in m.headers
        assert 'ratelimit_checks_total{zone="api",decision="allowed"} 6' in m.text
        r = client.get("/nothing-here", headers={"X-API-Key": "k"})
        assert r.status_code == 404 and r.headers["x-ratelimit-limit"] == "100"
    finally:
        for name in (tag, f"{tag}-logins"):
            try:
                libratelimit.shm_unlink(name)
            except libratelimit.SharedMemoryError:
                pass


def test_the_server_command_lines_are_those_the_server_tests_run():
    lines = [line.split("#")[0].strip() for line in blocks("sh")[1].splitlines()]
    uvicorn, gunicorn = [shlex.split(line) for line in lines if line]
    argv_u = test_servers.SERVERS["uvicorn"](8000)
    argv_g = test_servers.SERVERS["gunicorn --preload"](8000)
    assert uvicorn[0] == "uvicorn" and " ".join(uvicorn[1:]) in " ".join(argv_u)
    assert gunicorn[0] == "gunicorn" and set(gunicorn[1:]) <= set(argv_g)
    assert blocks("sh")[0].split()[:1] == ["make"] and "pip install ./python" in blocks("sh")[0]
