"""One redaction layer at every sink, and a private ``AIB_HOME``.

Attack: a template whose scripts and files come from SAS-bearing URLs served by a loopback HTTP server, a guest that
prints the SAS URL and the operator's configured storage key and AWS secret, and a failing step whose error quotes
them. Nothing secret may reach stdout (``--json``), stderr, events, ``customization.log``, ``run.json`` or the
template copy; the legitimate use (the fetch itself, the step output lines) still works, with the secrets masked.
"""

from __future__ import annotations

import http.server
import json
import logging
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from aib_sdk.cli import main
from aib_sdk.redaction import MASK, Secret, redact, redact_text, register_secret
from aib_sdk.testing.fakes import FakePlugin, fake_template

SAS = "sv=2024-01-01&sig=Zm9vYmFyU0VDUkVUU0lHTkFUVVJF%3D"
STORAGE_KEY = "c3RvcmFnZS1hY2NvdW50LWtleS1zZWNyZXQ="
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WINDOWS_PASSWORD = "Gen3rated!Passw0rd-xyz"


@pytest.fixture
def http_server() -> Iterator[str]:
    """A loopback HTTP server answering every GET with a tiny script (the query string is ignored)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"#!/bin/sh\necho hello\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_secret_cannot_be_printed_by_accident(caplog: pytest.LogCaptureFixture) -> None:
    secret = Secret(WINDOWS_PASSWORD)
    shown = [str(secret), repr(secret), f"{secret}", "%s" % secret, json.dumps({"p": str(secret)})]  # noqa: UP031
    logging.getLogger("test").warning("password %s", secret)
    assert all(WINDOWS_PASSWORD not in text for text in [*shown, caplog.text])
    assert secret.reveal() == WINDOWS_PASSWORD  # the one place that needs it still gets it
    # Once known, the value is masked in any text, e.g. a guest echoing it back.
    assert redact_text(f"net user builder {WINDOWS_PASSWORD}") == f"net user builder {MASK}"
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(secret)


def test_urls_lose_query_and_userinfo_but_stay_useful() -> None:
    text = f"GET https://acct.blob.core.windows.net/c/a.vhd?{SAS} and ftp://user:pw@host.example/x failed"
    cleaned = redact_text(text)
    assert "sig=" not in cleaned and "pw@" not in cleaned
    assert f"https://acct.blob.core.windows.net/c/a.vhd?{MASK}" in cleaned and "ftp://host.example/x" in cleaned
    assert redact({"a": [f"s3://b/k?X-Amz-Signature=abc{SAS}"]}) == {"a": [f"s3://b/k?{MASK}"]}
    register_secret("short")  # too short to mask safely: ordinary words stay readable
    assert redact_text("a short note") == "a short note"


def _tree(root: Path) -> list[Path]:
    return [root, *sorted(root.rglob("*"))]


def test_no_sink_holds_a_secret_and_aib_home_is_private(
    tmp_path: Path, fakes: FakePlugin, http_server: str, capsys, monkeypatch
) -> None:
    config = tmp_path / "aib.toml"
    config.write_text(f'[azure.storage.acct]\nblob_endpoint = "http://127.0.0.1:1/acct"\nkey = "{STORAGE_KEY}"\n')
    monkeypatch.setenv("AIB_CONFIG", str(config))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    script_url = f"{http_server}/scripts/setup.sh?{SAS}"
    file_url = f"{http_server}/files/app.conf?{SAS}"
    fakes.world.fail_command(
        r"script_customize_1",
        output=f"curl {script_url}\nkey={STORAGE_KEY}\naws={AWS_SECRET}\nboom",
        exit_code=3,
    )
    doc = fake_template(
        steps=0,
        customize=[
            {"type": "File", "name": "conf", "sourceUri": file_url, "destination": "/tmp/app.conf"},
            {"type": "Shell", "name": "setup", "scriptUri": script_url},
        ],
    )
    template = tmp_path / "proj" / "t.json"
    template.parent.mkdir()
    template.write_text(json.dumps(doc))
    code = main(["build", str(template), "--json", "--progress", "plain"])
    captured = capsys.readouterr()
    assert code != 0
    result = json.loads(captured.out)
    assert result["lastRunStatus"]["runState"] == "Failed"
    # The legitimate use: both downloads happened and the step's output is there, masked.
    uploads = [data for m in fakes.world.machines for _, _, data in m.fake_communicator.uploads]
    assert uploads == [b"#!/bin/sh\necho hello\n"] * 2
    home = tmp_path / "home"
    log = next(home.rglob("customization.log")).read_text()
    assert f"key={MASK}" in log and f"aws={MASK}" in log and f"/scripts/setup.sh?{MASK}" in log
    sinks = {"stdout": captured.out, "stderr (the live display of every event)": captured.err}
    for path in _tree(home):
        if path.is_file():
            sinks[str(path.relative_to(home))] = path.read_bytes().decode("utf-8", "replace")
    assert any(name.endswith("run.json") for name in sinks) and any(n.endswith("template.json") for n in sinks)
    for name, text in sinks.items():
        for secret in ("sig=", STORAGE_KEY, AWS_SECRET):
            assert secret not in text, f"{secret!r} leaked into {name}"
    # AIB_HOME is the operator's alone, and the run's staging tree (inputs, logs, records) was created private.
    for path in _tree(home / "staging"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
