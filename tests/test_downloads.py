"""Downloads against a real loopback HTTP server serving real archives packed from the bundled sample.

Nothing here reaches the internet. Google's servers are the one thing that cannot exist here: for the gdown path a
loopback HTTPS proxy with a self-signed certificate stands in for drive.google.com, drive.usercontent.google.com and
accounts.google.com, serving the pages Drive serves (virus-scan confirmation, quota exceeded, sign-in), so gdown's
own request flow runs unchanged.
"""

from __future__ import annotations

import errno
import http.server
import io
import json
import shutil
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tutorseg.cli import main
from tutorseg.data.dataset import load_dataset
from tutorseg.integrations.archives import file_hash, pack_folder
from tutorseg.integrations.downloads import (
    MARKER_NAME,
    STAGING_PREFIX,
    ChecksumError,
    DiskFullError,
    DownloadError,
    NetworkError,
    download,
)
from tutorseg.integrations.manifests import Manifest

# --------------------------------------------------------------------------------------------------- loopback server


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files[path]`` with Range support; ``server.cut_once`` paths drop the first connection."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Range")))
        time.sleep(self.server.delay_s)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range") and self.path not in self.server.ignore_range:
            start = int(self.headers["Range"].removeprefix("bytes=").removesuffix("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if self.path in self.server.cut_once:
            self.server.cut_once.discard(self.path)
            self.wfile.write(body[start:start + len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.requests, httpd.cut_once, httpd.ignore_range = {}, [], set(), set()
    httpd.delay_s = 0.0
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def sample_archive(tmp_path_factory, sample_dir) -> Path:
    """A real .tar.gz of the bundled sample (25 labelled Hippocampus cases), packed as instructors pack."""
    return pack_folder(sample_dir, tmp_path_factory.mktemp("archive") / "hippocampus_sample.tar.gz")


def manifest_for(archive: Path, sources: list[str], sample_dir: Path, *, size: bool = True,
                 name: str = "hippocampus_sample") -> Manifest:
    ds = load_dataset(sample_dir)
    return Manifest.from_dict({
        "name": name, "description": "bundled sample", "license": "CC-BY-SA 4.0", "citation": "MSD",
        "layout": "msd", "modality": "MRI", "dimensionality": 3, "spacing": "1 x 1 x 1 mm",
        "expected_cases": len(ds.training),
        "files": [{"filename": archive.name, "hash": file_hash(archive), "size": archive.stat().st_size if size else None,
                   "sources": sources, "extract": True}]})


def serve(server, archive: Path, path: str = "/data/sample.tar.gz") -> str:
    server.files[path] = archive.read_bytes()
    return server.url + path


def assert_clean(to: Path) -> None:
    """Nothing half-written: no staging folder, no partial file, no dataset folder."""
    assert not to.exists() or list(to.iterdir()) == [], sorted(p.name for p in to.iterdir())


# --------------------------------------------------------------------------------------------------- HTTP


def test_good_archive_is_fetched_verified_and_extracted(server, sample_archive, sample_dir, tmp_path):
    manifest = manifest_for(sample_archive, [serve(server, sample_archive)], sample_dir)
    folder = download(manifest, tmp_path / "data", progress=False)
    assert folder == tmp_path / "data" / sample_dir.name
    assert len(load_dataset(folder).training) == manifest.expected_cases
    assert (folder / "imagesTr" / "hippocampus_001.nii.gz").read_bytes() == \
        (sample_dir / "imagesTr" / "hippocampus_001.nii.gz").read_bytes()
    assert json.loads((folder / MARKER_NAME).read_text())["hash"] == manifest.files[0].hash
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [sample_dir.name]  # archive and staging gone


def test_verified_cache_makes_no_request(server, sample_archive, sample_dir, tmp_path):
    manifest = manifest_for(sample_archive, [serve(server, sample_archive)], sample_dir)
    first = download(manifest, tmp_path, progress=False)
    requests_before = len(server.requests)
    assert download(manifest, tmp_path, progress=False) == first
    assert len(server.requests) == requests_before


def test_two_downloads_into_one_folder_fetch_once(server, sample_archive, sample_dir, tmp_path, capsys):
    """Two notebooks downloading into the same folder at once: the second waits for the first and uses its result."""
    manifest = manifest_for(sample_archive, [serve(server, sample_archive)], sample_dir)
    server.delay_s = 1.0  # the first download is still running when the second starts
    results, errors = [], []

    def fetch():
        try:
            results.append(download(manifest, tmp_path / "data", progress=False))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.3)
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and len(results) == 2 and results[0] == results[1]
    assert [path for path, _ in server.requests].count("/data/sample.tar.gz") == 1
    assert "another download into" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [sample_dir.name]


def test_staging_left_by_a_killed_download_is_removed(server, sample_archive, sample_dir, tmp_path):
    stale = tmp_path / "data" / f"{STAGING_PREFIX}killed"  # what a SIGKILLed download leaves behind
    stale.mkdir(parents=True)
    (stale / "hippocampus_sample.tar.gz").write_bytes(b"the first third of an archive")
    manifest = manifest_for(sample_archive, [serve(server, sample_archive)], sample_dir)
    download(manifest, tmp_path / "data", progress=False)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [sample_dir.name]


def test_cache_with_missing_files_is_reported(server, sample_archive, sample_dir, tmp_path):
    manifest = manifest_for(sample_archive, [serve(server, sample_archive)], sample_dir)
    folder = download(manifest, tmp_path, progress=False)
    (folder / "labelsTr" / "hippocampus_001.nii.gz").unlink()
    with pytest.raises(DownloadError, match="(?s)missing or changed.*hippocampus_001.*Delete the folder"):
        download(manifest, tmp_path, progress=False)


def test_corrupted_archive_is_rejected_and_nothing_left(server, sample_archive, sample_dir, tmp_path):
    manifest = manifest_for(sample_archive, [server.url + "/bad.tar.gz"], sample_dir, size=False)
    corrupted = bytearray(sample_archive.read_bytes())
    corrupted[len(corrupted) // 2] ^= 0xFF
    server.files["/bad.tar.gz"] = bytes(corrupted)
    to = tmp_path / "data"
    with pytest.raises(ChecksumError, match=r"(?s)hash sha256:[0-9a-f]+, expected sha256:.*corrupted"):
        download(manifest, to, progress=False)
    assert_clean(to)


def test_truncated_file_fails_on_size(server, sample_archive, sample_dir, tmp_path):
    manifest = manifest_for(sample_archive, [server.url + "/short.tar.gz"], sample_dir)
    server.files["/short.tar.gz"] = sample_archive.read_bytes()[:1000]
    with pytest.raises(ChecksumError, match="size 1000 bytes, expected"):
        download(manifest, tmp_path / "data", progress=False)
    assert_clean(tmp_path / "data")


def evil_archive(tmp_path: Path, sample_dir: Path, kind: str) -> Path:
    """A tar holding a real case and one entry that escapes the target."""
    archive = tmp_path / f"evil_{kind}.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(sample_dir / "dataset.json", arcname="sample/dataset.json")
        if kind == "dotdot":
            tar.add(sample_dir / "imagesTr" / "hippocampus_001.nii.gz", arcname="sample/../../escaped.nii.gz")
        elif kind == "absolute":  # TarInfo written by hand: tar.add() would strip the leading "/"
            data = (sample_dir / "imagesTr" / "hippocampus_001.nii.gz").read_bytes()
            absolute = tarfile.TarInfo(str(tmp_path / "escaped.nii.gz"))
            absolute.size = len(data)
            tar.addfile(absolute, io.BytesIO(data))
        else:
            link = tarfile.TarInfo("sample/imagesTr/link.nii.gz")
            link.type, link.linkname = tarfile.SYMTYPE, "../../../../etc/passwd"
            tar.addfile(link)
    return archive


@pytest.mark.parametrize("kind, message", [("dotdot", "climbs out"), ("absolute", "absolute path"),
                                           ("symlink", "points outside")])
def test_escaping_archive_is_rejected(server, sample_dir, tmp_path, kind, message):
    archive = evil_archive(tmp_path, sample_dir, kind)
    manifest = manifest_for(archive, [serve(server, archive, "/evil.tar")], sample_dir)
    to = tmp_path / "data"
    with pytest.raises(DownloadError, match=message):
        download(manifest, to, progress=False)
    assert_clean(to)
    assert not (tmp_path / "escaped.nii.gz").exists()


def test_interrupted_download_resumes_with_range(server, sample_archive, sample_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("tutorseg.integrations.downloads.RESUME_BACKOFF_S", 0.0)
    url = serve(server, sample_archive)
    server.cut_once.add("/data/sample.tar.gz")
    folder = download(manifest_for(sample_archive, [url], sample_dir), tmp_path, progress=False)
    assert (folder / "dataset.json").is_file()
    ranges = [r for path, r in server.requests if path == "/data/sample.tar.gz"]
    assert ranges[0] is None
    assert ranges[1] == f"bytes={len(sample_archive.read_bytes()) // 3}-"  # asked only for the missing part


def test_server_ignoring_range_sends_the_whole_file_again(server, sample_archive, sample_dir, tmp_path,
                                                          monkeypatch):
    monkeypatch.setattr("tutorseg.integrations.downloads.RESUME_BACKOFF_S", 0.0)
    url = serve(server, sample_archive)
    server.cut_once.add("/data/sample.tar.gz")
    server.ignore_range.add("/data/sample.tar.gz")
    folder = download(manifest_for(sample_archive, [url], sample_dir), tmp_path, progress=False)
    assert (folder / "dataset.json").is_file()


@pytest.mark.parametrize("first", ["missing", "refused"])
def test_second_source_used_when_first_fails(server, sample_archive, sample_dir, tmp_path, first):
    refused = "http://127.0.0.1:1/nothing.tar.gz"  # port 1: nothing listens, the connection is refused
    first_url = server.url + "/missing.tar.gz" if first == "missing" else refused
    manifest = manifest_for(sample_archive, [first_url, serve(server, sample_archive)], sample_dir)
    folder = download(manifest, tmp_path, progress=False)
    assert (folder / "dataset.json").is_file()


def test_no_network_gives_clear_message(sample_archive, sample_dir, tmp_path):
    manifest = manifest_for(sample_archive, ["http://127.0.0.1:1/a.tar.gz"], sample_dir)
    with pytest.raises(NetworkError, match="(?s)no network connection.*Check the internet connection"):
        download(manifest, tmp_path / "data", progress=False)
    assert_clean(tmp_path / "data")


def test_disk_full_gives_clear_message_and_leaves_nothing(server, sample_archive, sample_dir, tmp_path,
                                                          monkeypatch):
    # A file-size-limited file system cannot be mounted here, so ENOSPC is injected into the extraction step:
    # the archive has been downloaded and verified, and writing the extracted files fails as on a full disk.
    def full_disk(archive, destination):
        Path(destination).mkdir(parents=True)
        (Path(destination) / "half_written.nii.gz").write_bytes(b"\0" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tutorseg.integrations.downloads.extract_archive", full_disk)
    manifest = manifest_for(sample_archive, [serve(server, sample_archive)], sample_dir)
    with pytest.raises(DiskFullError, match="(?s)disk full.*Free some space"):
        download(manifest, tmp_path / "data", progress=False)
    assert_clean(tmp_path / "data")


def test_existing_folder_is_never_overwritten(server, sample_archive, sample_dir, tmp_path):
    (tmp_path / sample_dir.name).mkdir()
    (tmp_path / sample_dir.name / "mine.txt").write_text("user's own work")
    manifest = manifest_for(sample_archive, [serve(server, sample_archive)], sample_dir)
    with pytest.raises(DownloadError, match="already exists but is not a verified download"):
        download(manifest, tmp_path, progress=False)
    assert (tmp_path / sample_dir.name / "mine.txt").read_text() == "user's own work"
    assert sorted(p.name for p in tmp_path.iterdir()) == [sample_dir.name]


def test_wrong_case_count_is_refused(server, sample_archive, sample_dir, tmp_path):
    data = manifest_for(sample_archive, [serve(server, sample_archive)], sample_dir).to_dict()
    data["expected_cases"] = 260
    with pytest.raises(DownloadError, match="(?s)25 labelled cases.*expects msd with 260"):
        download(Manifest.from_dict(data), tmp_path / "data", progress=False)
    assert_clean(tmp_path / "data")


def test_placeholder_source_says_the_dataset_is_not_hosted(sample_dir, tmp_path):
    """A manifest written by `tutorseg manifest create` before the instructor pasted the Drive id."""
    from tutorseg.integrations.manifests import create_manifest

    path = create_manifest(sample_dir, out_dir=tmp_path / "hosting", check=False, verbose=False)
    with pytest.raises(DownloadError, match="(?s)no download source yet.*Anyone with the link"):
        download(path, tmp_path / "data", progress=False)
    assert not (tmp_path / "data").exists()


# --------------------------------------------------------------------------------------------------- separate files

GITHUB_RAW = "https://raw.githubusercontent.com"


def _isbi_on_loopback(server, isbi_dir: Path, *, corrupt: str | None = None) -> Manifest:
    """The shipped ISBI manifest with its hosts replaced by the loopback server, which serves the published PNGs.

    The real hosts (raw.githubusercontent.com, github.com) cannot be reached here. The server serves the files of
    the shared _raw/ copy (byte-identical to the repository's, PROVENANCE.md) at the manifest's own URL paths, so
    the paths, hashes and the build step are the shipped ones; only scheme and host differ.
    """
    data = json.loads((Path(__file__).resolve().parents[1] / "data_manifests" / "ISBI2012_EM_membrane.json")
                      .read_text(encoding="utf-8"))
    for entry in data["files"]:
        served = []
        for source in entry["sources"]:
            url = urllib.parse.urlsplit(source)
            path = f"/{url.hostname}{url.path}"
            server.files[path] = (isbi_dir / entry["path"]).read_bytes()
            if corrupt is not None and entry["path"] == corrupt and url.hostname == "raw.githubusercontent.com":
                server.files[path] = server.files[path][:-1] + b"\0"  # a flipped byte at the first host
            served.append(server.url + path)
        entry["sources"] = served
    return Manifest.from_dict(data)


@pytest.mark.shared
def test_isbi_is_built_from_the_published_pngs_as_the_shared_copy(server, isbi_dir, tmp_path):
    manifest = _isbi_on_loopback(server, isbi_dir)
    folder = download(manifest, tmp_path / "data", progress=False)
    assert folder == tmp_path / "data" / "ISBI2012_EM_membrane"
    assert len(server.requests) == 60 and not list((tmp_path / "data").glob(STAGING_PREFIX + "*"))

    def files(root: Path) -> set[str]:
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}

    assert files(folder) - {MARKER_NAME} == files(isbi_dir) - {"PROVENANCE.md"}
    assert json.loads((folder / "dataset.json").read_text()) == json.loads((isbi_dir / "dataset.json").read_text())
    for name in files(isbi_dir) - {"PROVENANCE.md", "dataset.json"}:
        if name.startswith("labelsTr/"):  # derived: the same pixels (PNG encoders may differ in bytes)
            assert np.array_equal(np.asarray(Image.open(folder / name)), np.asarray(Image.open(isbi_dir / name))), name
        else:  # images and the files as published: the same bytes
            assert (folder / name).read_bytes() == (isbi_dir / name).read_bytes(), name

    server.requests.clear()
    assert download(manifest, tmp_path / "data", progress=False) == folder  # verified copy found: no request
    assert server.requests == []


@pytest.mark.shared
def test_a_corrupted_file_is_fetched_from_the_next_source(server, isbi_dir, tmp_path):
    manifest = _isbi_on_loopback(server, isbi_dir, corrupt="_raw/label/7.png")
    folder = download(manifest, tmp_path / "data", progress=False)
    assert (folder / "_raw/label/7.png").read_bytes() == (isbi_dir / "_raw/label/7.png").read_bytes()
    commit, path = "b45af4d458437d8281cc218a07fd4380818ece4a", "data/membrane/train/label/7.png"
    assert [p for p, _ in server.requests if p.endswith("label/7.png")] == [
        f"/raw.githubusercontent.com/zhixuhao/unet/{commit}/{path}", f"/github.com/zhixuhao/unet/raw/{commit}/{path}"]


@pytest.mark.shared
def test_a_file_bad_at_every_source_leaves_nothing_behind(server, isbi_dir, tmp_path):
    manifest = _isbi_on_loopback(server, isbi_dir)
    for path in [p for p in server.files if p.endswith("/image/12.png")]:
        server.files[path] = b"not a png"
    with pytest.raises(ChecksumError, match="(?s)could not download image_12.png; every source failed.*size 9 bytes"):
        download(manifest, tmp_path / "data", progress=False)
    assert_clean(tmp_path / "data")


# --------------------------------------------------------------------------------------------------- CLI


def test_cli_download_ok_and_failure_exit_codes(server, sample_archive, sample_dir, tmp_path, capsys):
    good = manifest_for(sample_archive, [serve(server, sample_archive)], sample_dir).save(tmp_path / "good.json")
    assert main(["download", str(good), "--to", str(tmp_path / "data"), "-q"]) == 0
    assert f"ready: {tmp_path / 'data' / sample_dir.name}" in capsys.readouterr().out

    bad = manifest_for(sample_archive, [server.url + "/missing"], sample_dir).save(tmp_path / "bad.json")
    assert main(["download", str(bad), "--to", str(tmp_path / "other"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "tutorseg download: error: could not download" in err and "HTTP 404" in err
    assert "Traceback" not in err

    assert main(["download", "NoSuchDataset", "--to", str(tmp_path / "other")]) == 1
    assert "Shipped manifests: ISBI2012_EM_membrane, Task04_Hippocampus" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------- Google Drive

# Stand-in pages, as Drive serves them (text of the live pages, reduced to what gdown reads).
VIRUS_SCAN_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive can't scan this file for viruses.</p>
<p class="uc-warning-subcaption">{name} is too large for Google to scan for viruses. Would you still like to download this file?</p>
<form id="download-form" action="https://drive.usercontent.google.com/download" method="get"><input type="submit" id="uc-download-link" class="goog-inline-block jfk-button jfk-button-action" value="Download anyway"/><input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download"><input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="0b4d3a8e-1c1e-4a5e-9f3c-7d7a2f1e6b42"></form></div></div></body></html>
"""
QUOTA_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>
<div class="uc-main"><div id="uc-text"><p class="uc-error-caption">Sorry, you can&#39;t view or download this file at this time.</p>
<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Please try accessing the file again later. If the file you are trying to access is particularly large or is shared with many people, it may take up to 24 hours to be able to view or download the file. If you still can't access a file after 24 hours, contact your domain administrator.</p>
</div></div></body></html>
"""
SIGN_IN_PAGE = """<!DOCTYPE html><html lang="en"><head><title>Google Drive: Sign-in</title></head><body>
<div>Sign in</div><div>to continue to Google Drive</div><form method="post" action="/v3/signin/identifier"><input type="email" name="identifier"></form></body></html>
"""


class DriveStandIn(http.server.BaseHTTPRequestHandler):
    """An HTTPS proxy: CONNECT opens TLS with the test certificate, then answers as the Google host asked for."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_CONNECT(self) -> None:
        self.send_response(200, "Connection established")
        self.end_headers()
        tls = self.server.tls.wrap_socket(self.connection, server_side=True)
        DriveStandIn(tls, self.client_address, self.server)  # serves the requests inside the tunnel
        self.close_connection = True

    def do_GET(self) -> None:
        host = self.headers["Host"].split(":")[0]
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        self.server.requests.append((host, url.path, query))
        file_id = query.get("id", "")
        if host == "drive.google.com" and url.path == "/uc":
            if file_id == "PRIVATE":
                self.reply(302, b"", location="https://accounts.google.com/v3/signin/identifier?continue="
                                               + urllib.parse.quote(f"https://drive.google.com/uc?id={file_id}"))
            elif file_id == "QUOTA":
                self.reply(200, QUOTA_PAGE.encode(), "text/html; charset=utf-8")
            else:
                self.reply(200, VIRUS_SCAN_PAGE.format(name="sample.tar.gz", id=file_id).encode(),
                           "text/html; charset=utf-8")
        elif host == "drive.usercontent.google.com" and query.get("confirm") == "t":
            self.reply(200, self.server.archive, "application/octet-stream",
                       disposition='attachment; filename="sample.tar.gz"')
        elif host == "accounts.google.com":
            self.reply(200, SIGN_IN_PAGE.encode(), "text/html; charset=utf-8")
        else:
            self.reply(404, b"not found", "text/plain")

    def reply(self, code, body, content_type="text/html", *, location=None, disposition=None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if location:
            self.send_header("Location", location)
        if disposition:
            self.send_header("Content-Disposition", disposition)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def drive(tmp_path, monkeypatch, sample_archive):
    """The Drive stand-in, with requests (gdown's HTTP library) pointed at it through its proxy variables."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make the stand-in's TLS certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=drive.google.com", "-addext",
                    "subjectAltName=DNS:drive.google.com,DNS:drive.usercontent.google.com,DNS:accounts.google.com",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DriveStandIn)
    httpd.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    httpd.tls.load_cert_chain(cert, key)
    httpd.archive, httpd.requests = sample_archive.read_bytes(), []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    for var in ("NO_PROXY", "no_proxy", "CURL_CA_BUNDLE", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_gdrive_source_runs_gdowns_confirmation_flow(drive, sample_archive, sample_dir, tmp_path):
    manifest = manifest_for(sample_archive, ["gdrive:1AbCdEfGhIjKlMnOpQrStUvWxYz012345"], sample_dir)
    folder = download(manifest, tmp_path / "data", progress=False)
    assert len(load_dataset(folder).training) == manifest.expected_cases
    hosts = [(host, path) for host, path, _ in drive.requests]
    assert hosts == [("drive.google.com", "/uc"), ("drive.usercontent.google.com", "/download")]


def test_gdrive_quota_page_gives_clear_message(drive, sample_archive, sample_dir, tmp_path):
    manifest = manifest_for(sample_archive, ["gdrive:QUOTA"], sample_dir)
    with pytest.raises(DownloadError, match="(?s)quota exceeded.*Too many users.*24 hours.*mirror") as info:
        download(manifest, tmp_path / "data", progress=False)
    assert type(info.value).__name__ == "DriveQuotaError"
    assert_clean(tmp_path / "data")


def test_gdrive_unshared_file_gives_clear_message(drive, sample_archive, sample_dir, tmp_path):
    manifest = manifest_for(sample_archive, ["gdrive:PRIVATE"], sample_dir)
    with pytest.raises(DownloadError, match="(?s)not shared publicly.*Anyone with the link") as info:
        download(manifest, tmp_path / "data", progress=False)
    assert type(info.value).__name__ == "DriveNotSharedError"
    assert ("accounts.google.com", "/v3/signin/identifier") in [(h, p) for h, p, _ in drive.requests]


def test_gdrive_failure_falls_back_to_the_mirror(drive, server, sample_archive, sample_dir, tmp_path):
    manifest = manifest_for(sample_archive, ["gdrive:QUOTA", serve(server, sample_archive)], sample_dir)
    folder = download(manifest, tmp_path / "data", progress=False)  # the http:// mirror is reached directly
    assert (folder / "dataset.json").is_file()


def test_an_instructors_nnunet_model_comes_through_a_manifest(server, tmp_path):
    """Notebook 04, Step 9: NNUNET_MODEL names a manifest; the model's zip is downloaded, verified by its checksum,
    extracted safely (check=False: a model, not a dataset) and imported. The zip has the layout of nnU-Net's
    nnUNetv2_export_model_to_zip; the model is tests/data/nnunet_models/3d_fullres (made by nnU-Net 2.8.1)."""
    import zipfile

    from tutorseg.integrations.downloads import download
    from tutorseg.integrations.manifests import Manifest
    from tutorseg.integrations.nnunet_models import import_nnunet_model

    model = Path(__file__).parent / "data" / "nnunet_models" / "3d_fullres"
    archive = tmp_path / "instructors_model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for file in sorted(p for p in model.rglob("*") if p.is_file() and "predictions" not in p.parts[-2]):
            z.write(file, f"Dataset991_Hippocampus/nnUNetTrainer_5epochs__nnUNetPlans__3d_fullres/"
                          f"{file.relative_to(model).as_posix()}")
    manifest = Manifest.from_dict({
        "name": "instructors_model", "description": "a trained nnU-Net model", "license": "CC-BY-SA 4.0",
        "citation": "MSD", "layout": "nnunetv2", "modality": "MRI", "dimensionality": 3, "spacing": "1 x 1 x 1 mm",
        "expected_cases": 20,  # the cases the model was trained on (not checked: check=False)
        "files": [{"filename": archive.name, "hash": file_hash(archive), "size": archive.stat().st_size,
                   "sources": [serve(server, archive, "/models/instructors_model.zip")], "extract": True}]})
    manifest_file = manifest.save(tmp_path / "instructors_model.json")

    folder = download(manifest_file, tmp_path / "nnunet_download", check=False, progress=False)
    imported = import_nnunet_model(folder, tmp_path / "nnunet_model")
    assert imported.description["configuration"] == "3d_fullres"
    assert [run.name for run in imported.run_dirs] == ["fold_0"]
    assert (imported.run_dirs[0] / "checkpoint_final.pt").is_file()
