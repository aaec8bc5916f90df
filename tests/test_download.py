"""Downloads against a local HTTP server on 127.0.0.1 (never a real host): resume, checksums, manifest, CLI."""

from __future__ import annotations

import hashlib
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from nanogpt_cli.main import cli
from nanogpt_core.data import download
from nanogpt_core.data.download import DATASETS, Dataset, data_dir, download_dataset
from nanogpt_core.errors import ConfigError, DataError
from nanogpt_core.files import sha256_file as sha256_of

SHARED_SHAKESPEARE = Path("/work/shared/data/tinyshakespeare.txt")
BODY = bytes(range(256)) * 40  # 10,240 bytes
SHA = hashlib.sha256(BODY).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.files`; honours `Range: bytes=N-` unless `server.ranges` is off; can drop a connection."""

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start, wanted = 0, self.headers.get("Range")
        if wanted and server.ranges:
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut, server.cut_after = server.cut_after, None  # drop only the first response
        self.wfile.write(body if cut is None else body[:cut])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.ranges, httpd.cut_after = {}, [], True, None
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def datasets(monkeypatch):
    """Two throwaway datasets: one file with a published checksum, and a sharded one without."""
    monkeypatch.setitem(DATASETS, "one", Dataset("one", "test file", "http://unused.invalid", "input.txt",
                                                 known={"input.txt": (len(BODY), SHA)}))
    monkeypatch.setitem(DATASETS, "shards", Dataset("shards", "test shards", "http://unused.invalid",
                                                    "shard_{i:05d}.parquet", max_shards=3))
    monkeypatch.delenv(download.ENV_BASE_URL, raising=False)


def fetch(name, server, tmp_path, **kwargs):
    return download_dataset(name, directory=tmp_path, base_url=server.url, progress=False, retry_wait=0,
                            log=lambda line: None, **kwargs)


def test_download_verifies_published_checksum_and_skips_a_second_time(server, datasets, tmp_path):
    server.files["/one/input.txt"] = BODY
    target = fetch("one", server, tmp_path)
    assert target == tmp_path / "one"
    assert (target / "input.txt").read_bytes() == BODY
    assert not (target / "input.txt.part").exists()
    assert server.requests == [("/one/input.txt", None)]
    fetch("one", server, tmp_path)
    assert len(server.requests) == 1  # already here and intact: nothing fetched


def test_partial_file_is_resumed_with_a_range_request(server, datasets, tmp_path):
    server.files["/one/input.txt"] = BODY
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "input.txt.part").write_bytes(BODY[:3000])
    fetch("one", server, tmp_path)
    assert server.requests == [("/one/input.txt", "bytes=3000-")]
    assert (tmp_path / "one" / "input.txt").read_bytes() == BODY


def test_interrupted_download_keeps_its_part_and_the_next_run_resumes(server, datasets, tmp_path):
    server.files["/one/input.txt"] = BODY
    server.cut_after = 4096
    with pytest.raises(DataError, match="run the same command again to resume from the 4,096 bytes"):
        fetch("one", server, tmp_path, retries=1)
    assert (tmp_path / "one" / "input.txt.part").stat().st_size == 4096
    assert not (tmp_path / "one" / "input.txt").exists()
    fetch("one", server, tmp_path)
    assert server.requests[-1] == ("/one/input.txt", "bytes=4096-")
    assert (tmp_path / "one" / "input.txt").read_bytes() == BODY


def test_retry_resumes_within_one_run(server, datasets, tmp_path):
    server.files["/one/input.txt"] = BODY
    server.cut_after = 100
    fetch("one", server, tmp_path, retries=2)
    assert [r[1] for r in server.requests] == [None, "bytes=100-"]
    assert sha256_of(tmp_path / "one" / "input.txt") == SHA


def test_server_without_range_support_restarts_the_file(server, datasets, tmp_path):
    server.files["/one/input.txt"] = BODY
    server.ranges = False
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "input.txt.part").write_bytes(b"stale bytes that must not stay in front")
    fetch("one", server, tmp_path)
    assert (tmp_path / "one" / "input.txt").read_bytes() == BODY


def test_checksum_mismatch_is_an_error_and_removes_the_file(server, datasets, tmp_path):
    server.files["/one/input.txt"] = BODY[:-1] + b"X"  # right size, wrong content
    with pytest.raises(DataError, match="checksum mismatch .*sha256 .* expected " + SHA):
        fetch("one", server, tmp_path)
    assert list((tmp_path / "one").glob("input.txt*")) == []


def test_corrupt_existing_file_is_fetched_again(server, datasets, tmp_path):
    server.files["/one/input.txt"] = BODY
    fetch("one", server, tmp_path)
    (tmp_path / "one" / "input.txt").write_bytes(b"damaged")
    fetch("one", server, tmp_path)
    assert (tmp_path / "one" / "input.txt").read_bytes() == BODY and len(server.requests) == 2


def test_shards_without_published_checksums_are_recorded_then_verified(server, datasets, tmp_path):
    shards = {f"/shards/shard_{i:05d}.parquet": bytes([i]) * (1000 + i) for i in range(3)}
    server.files.update(shards)
    target = fetch("shards", server, tmp_path, shards=2)
    assert sorted(p.name for p in target.glob("*.parquet")) == ["shard_00000.parquet", "shard_00001.parquet"]
    import json

    manifest = json.loads((target / "manifest.json").read_text())["files"]
    expected = hashlib.sha256(shards["/shards/shard_00001.parquet"]).hexdigest()
    assert manifest["shard_00001.parquet"]["sha256"] == expected
    assert manifest["shard_00001.parquet"]["size"] == 1001
    # the source changes; a deleted shard fetched again no longer matches what was recorded
    (target / "shard_00001.parquet").unlink()
    server.files["/shards/shard_00001.parquet"] = b"different bytes"
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch("shards", server, tmp_path, shards=2)
    assert not (target / "shard_00001.parquet").exists()
    with pytest.raises(ConfigError, match="between 1 and 3"):
        fetch("shards", server, tmp_path, shards=4)


def test_missing_file_is_a_one_line_error(server, datasets, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        fetch("one", server, tmp_path)


def test_cli_download_against_local_server(server, datasets, tmp_path, monkeypatch):
    server.files["/one/input.txt"] = BODY
    monkeypatch.setenv(download.ENV_BASE_URL, server.url)
    monkeypatch.setenv(download.ENV_DATA_DIR, str(tmp_path))
    result = CliRunner().invoke(cli, ["data", "download", "one"])
    assert result.exit_code == 0, result.output
    assert f"Ready: {tmp_path / 'one'}" in result.output
    assert (tmp_path / "one" / "input.txt").read_bytes() == BODY
    server.files["/one/input.txt"] = b"tampered"
    result = CliRunner().invoke(cli, ["data", "download", "one", "--dir", str(tmp_path / "other")])
    assert result.exit_code == 2
    assert "Error: checksum mismatch" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["data", "download", "nope"])
    assert result.exit_code == 2 and "unknown dataset 'nope'; choose one of:" in result.output


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv(download.ENV_DATA_DIR, str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv(download.ENV_DATA_DIR)
    assert data_dir() == Path("~/.cache/nanogpt/data").expanduser()


def test_registry_entries():
    shakespeare = DATASETS["tinyshakespeare"]
    assert shakespeare.file_names() == ["input.txt"]
    assert shakespeare.base_url.startswith("https://raw.githubusercontent.com/karpathy/char-rnn/")
    fineweb = DATASETS["fineweb-edu"]
    assert fineweb.file_names(2) == ["shard_00000.parquet", "shard_00001.parquet"]
    assert fineweb.file_names(1823)[-1] == "shard_01822.parquet"
    with pytest.raises(ConfigError):
        shakespeare.file_names(2)


@pytest.mark.skipif(not SHARED_SHAKESPEARE.exists(), reason="no local copy of tinyshakespeare")
def test_tinyshakespeare_checksum_constant_matches_the_real_file(server, tmp_path, monkeypatch):
    monkeypatch.delenv(download.ENV_BASE_URL, raising=False)
    size, sha = DATASETS["tinyshakespeare"].known["input.txt"]
    assert SHARED_SHAKESPEARE.stat().st_size == size == 1_115_394
    assert sha256_of(SHARED_SHAKESPEARE) == sha
    server.files["/tinyshakespeare/input.txt"] = SHARED_SHAKESPEARE.read_bytes()
    target = fetch("tinyshakespeare", server, tmp_path)
    assert sha256_of(target / "input.txt") == sha


# --- the CORE eval bundle: a zip, unpacked safely ----------------------------------------------------------------

FIXTURE_BUNDLE = Path(__file__).parent / "data" / "eval_bundle"


def _zip(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)  # a symbolic link, as `zip --symlinks` stores one
            zf.writestr(info, target)
    return buffer.getvalue()


def _bundle_zip() -> bytes:
    """The fixture bundle laid out as nanochat's eval_bundle.zip: everything under eval_bundle/."""
    return _zip({f"eval_bundle/{p.relative_to(FIXTURE_BUNDLE).as_posix()}": p.read_bytes()
                 for p in sorted(FIXTURE_BUNDLE.rglob("*")) if p.is_file()})


def _serve_archive(server, monkeypatch, body: bytes) -> bytes:
    """Serve `body` as core-eval's archive, the real entry given its checksum."""
    import dataclasses

    entry = dataclasses.replace(DATASETS["core-eval"],
                                known={"eval_bundle.zip": (None, hashlib.sha256(body).hexdigest())})
    monkeypatch.setitem(DATASETS, "core-eval", entry)
    monkeypatch.delenv(download.ENV_BASE_URL, raising=False)
    server.files["/core-eval/eval_bundle.zip"] = body
    return body


@pytest.fixture
def core_eval(server, monkeypatch):
    """The fixture bundle served as nanochat's eval_bundle.zip."""
    return _serve_archive(server, monkeypatch, _bundle_zip())


def test_core_eval_registry_entry():
    entry = DATASETS["core-eval"]
    assert entry.file_names() == ["eval_bundle.zip"] and entry.unpack
    assert f"{entry.base_url}/eval_bundle.zip" == "https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip"
    size, sha = entry.known["eval_bundle.zip"]
    assert size is None and len(sha) == 64


def test_core_eval_download_unpacks_the_bundle_once(server, core_eval, tmp_path):
    from nanogpt_core.evals import load_bundle

    lines = []
    target = download_dataset("core-eval", directory=tmp_path, base_url=server.url, progress=False, retry_wait=0,
                              log=lines.append)
    assert (target / "eval_bundle" / "core.yaml").read_bytes() == (FIXTURE_BUNDLE / "core.yaml").read_bytes()
    assert [t.label for t in load_bundle(target).tasks][:2] == ["tiny_choice_zeroshot", "tiny_question"]
    assert lines[-1] == f"unpacked: {target / 'eval_bundle'}"
    import json

    assert json.loads((target / "manifest.json").read_text())["files"]["eval_bundle.zip"]["unpacked"] == [
        "eval_bundle"]
    assert not [p for p in target.iterdir() if p.name.startswith(".tmp-")]
    # a second run fetches and unpacks nothing; a deleted bundle folder is unpacked again from the archive
    lines.clear()
    fetch("core-eval", server, tmp_path)
    download_dataset("core-eval", directory=tmp_path, base_url=server.url, progress=False, log=lines.append)
    assert len(server.requests) == 1 and not any(line.startswith("unpacked") for line in lines)
    shutil.rmtree(target / "eval_bundle")
    download_dataset("core-eval", directory=tmp_path, base_url=server.url, progress=False, log=lines.append)
    assert len(server.requests) == 1 and (target / "eval_bundle" / "eval_meta_data.csv").is_file()


@pytest.mark.parametrize(("members", "links", "what"), [
    ({"eval_bundle/core.yaml": b"x", "../escaped.txt": b"gotcha"}, None, "written outside"),
    ({"eval_bundle/../../escaped.txt": b"gotcha"}, None, "written outside"),
    ({"/tmp/escaped.txt": b"gotcha"}, None, "written outside"),
    ({"eval_bundle/core.yaml": b"x"}, {"eval_bundle/eval_data": "/etc"}, "a link"),
])
def test_a_hostile_archive_writes_nothing(server, monkeypatch, tmp_path, members, links, what):
    _serve_archive(server, monkeypatch, _zip(members, links))
    with pytest.raises(DataError, match=f"which would be {what} the folder it is unpacked into; refusing it"):
        fetch("core-eval", server, tmp_path / "data")
    target = tmp_path / "data" / "core-eval"
    assert sorted(p.name for p in target.iterdir()) == ["eval_bundle.zip", "manifest.json"]
    assert not list(tmp_path.rglob("escaped.txt"))


def test_a_corrupt_archive_is_one_line(server, monkeypatch, tmp_path):
    _serve_archive(server, monkeypatch, b"PK\x03\x04 this is not a zip")
    with pytest.raises(DataError, match="is not a readable zip"):
        fetch("core-eval", server, tmp_path)


def test_cli_core_eval_says_how_to_use_it(server, core_eval, tmp_path, monkeypatch):
    monkeypatch.setenv(download.ENV_BASE_URL, server.url)
    result = CliRunner().invoke(cli, ["data", "download", "core-eval", "--dir", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Evaluate a checkpoint with: nanogpt eval RUN --core" in result.output
    assert "nanogpt train --data" not in result.output


def test_core_eval_offline_is_one_line(monkeypatch, tmp_path):
    """No network (a base URL nothing listens on): the error names the URL and how to resume, no traceback."""
    monkeypatch.setenv(download.ENV_BASE_URL, "http://127.0.0.1:9")
    monkeypatch.setattr(download.time, "sleep", lambda seconds: None)  # the retries' back-off
    result = CliRunner().invoke(cli, ["data", "download", "core-eval", "--dir", str(tmp_path), "--no-progress"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Error: could not download http://127.0.0.1:9/core-eval/eval_bundle.zip" in result.output
