"""Model downloads (gui.download.fetch) against a local HTTP server: progress, resume after a stop,
a server that ignores ranges, a damaged file, no connection."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from gui.download import Downloadable, DownloadError, fetch

DATA = bytes(range(256)) * 4096 * 3  # 3 MiB: three chunks


class Server(http.server.BaseHTTPRequestHandler):
    ranges = True
    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        Server.seen.append(self.headers.get("Range"))
        start = 0
        if self.ranges and (asked := self.headers.get("Range")):
            start = int(asked.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(DATA) - start))
        self.end_headers()
        self.wfile.write(DATA[start:])

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def server():
    Server.seen = []
    Server.ranges = True
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/model.safetensors"
    httpd.shutdown()


def item(url: str, sha256: str = hashlib.sha256(DATA).hexdigest()) -> Downloadable:
    return Downloadable("test model", url, "model.safetensors", sha256, len(DATA))


def test_a_download_reports_progress_and_lands_only_when_checked(server, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    path = fetch(item(server), tmp_path / "model.safetensors", lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == DATA and not (tmp_path / "model.safetensors.part").exists()
    assert seen[-1] == (len(DATA), len(DATA)) and len(seen) == 3


def test_a_stopped_download_resumes_where_it_stopped(server, tmp_path: Path) -> None:
    stop = threading.Event()
    target = tmp_path / "model.safetensors"

    def progress(done: int, _total: int) -> None:
        if done >= 2**20:
            stop.set()

    with pytest.raises(DownloadError, match="kept and the next download continues"):
        fetch(item(server), target, progress, stop)
    part = target.with_name("model.safetensors.part")
    assert not target.exists() and part.stat().st_size == 2**20
    fetch(item(server), target, lambda *_: None)
    assert Server.seen == [None, f"bytes={2**20}-"]  # the second request asked only for the rest
    assert target.read_bytes() == DATA


def test_a_server_ignoring_the_range_restarts_cleanly(server, tmp_path: Path) -> None:
    Server.ranges = False
    target = tmp_path / "model.safetensors"
    target.with_name("model.safetensors.part").write_bytes(DATA[:1000])
    fetch(item(server), target, lambda *_: None)
    assert target.read_bytes() == DATA


def test_a_damaged_file_is_deleted_and_never_used(server, tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    with pytest.raises(DownloadError, match="arrived damaged"):
        fetch(item(server, sha256="0" * 64), target, lambda *_: None)
    assert list(tmp_path.iterdir()) == []


def test_no_connection_says_how_to_add_the_file_by_hand(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"Could not download .* copy it into .*models") as caught:
        fetch(item("http://127.0.0.1:9/model.safetensors"), tmp_path / "models" / "model.safetensors",
              lambda *_: None)
    assert "http://127.0.0.1:9/model.safetensors" in str(caught.value)
