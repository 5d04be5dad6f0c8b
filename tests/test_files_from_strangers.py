"""Files from strangers (#34): each kind of hostile file is refused with a message naming it, never a traceback.

The files are crafted here, small: a bomb is its ratio, not its bytes. Where a regression would exhaust the memory or
the disk, the command runs in a child process under an address-space limit (3 GiB: torch alone maps ~0.7 GiB) and a
file-size limit (256 MiB), so a regression fails the test and not the machine. Everything is real (tutorseg's CLI,
a loopback HTTP server, torch.save); nothing is mocked.
"""

from __future__ import annotations

import gzip
import http.server
import io
import json
import resource
import struct
import subprocess
import sys
import tarfile
import threading
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from builders import msd_dataset, sample_ids

import tutorseg
from tutorseg.data.artefacts import ArtefactError
from tutorseg.data.imageio import read_image
from tutorseg.data.limits import MAX_JSON_DEPTH, FileLimitError, parse_json
from tutorseg.data.problems import TutorsegError
from tutorseg.integrations.archives import LARGE_ENTRY_BYTES, extract_archive, file_hash
from tutorseg.integrations.downloads import download
from tutorseg.integrations.manifests import Manifest
from tutorseg.integrations.model_files import import_model
from tutorseg.integrations.transfers import ChecksumError, DiskFullError, DownloadError
from tutorseg.training.runs.checkpoint import load_checkpoint

MEMORY_LIMIT = 3 * 2**30
FILE_SIZE_LIMIT = 256 * 2**20
BOMB_BYTES = LARGE_ENTRY_BYTES + 64 * 2**20  # zeros: over the size where the ratio is checked, ~300 KB packed


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def run_limited(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``tutorseg ARGS`` in a child process under the memory and file-size limits."""
    return subprocess.run([sys.executable, "-m", "tutorseg", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=240, preexec_fn=_limits)


def assert_refused(result: subprocess.CompletedProcess, *names: str) -> str:
    """Exit code not 0, no traceback, and a message naming every one of ``names``."""
    output = result.stdout + result.stderr
    assert result.returncode not in (0, -9), output  # -9: killed (the memory limit was not respected)
    assert "Traceback" not in output, output
    for name in names:
        assert name in output, output
    return output


def zeros(n_bytes: int):
    """``n_bytes`` of zeros, 16 MiB at a time."""
    block = bytes(16 * 2**20)
    while n_bytes > 0:
        yield block[:n_bytes]
        n_bytes -= len(block)


# --------------------------------------------------------------------------------------------------- archives


def zip_bomb(path: Path, member: str, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
        with archive.open(member, "w", force_zip64=True) as f:
            for block in zeros(BOMB_BYTES):
                f.write(block)
    return path


def tar_bomb(path: Path) -> Path:
    with gzip.open(path, "wb", compresslevel=9) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        info = tarfile.TarInfo("dataset/imagesTr/big.nii")
        info.size = BOMB_BYTES

        class Zeros(io.RawIOBase):
            left = BOMB_BYTES

            def readable(self) -> bool:
                return True

            def readinto(self, buffer) -> int:
                n = min(len(buffer), self.left)
                buffer[:n] = bytes(n)
                self.left -= n
                return n

        tar.addfile(info, io.BufferedReader(Zeros()))
    return path


def test_a_model_zip_that_unpacks_a_bomb_is_refused_before_anything_is_written(tmp_path):
    model = json.dumps({"format": "tutorseg model 1", "dataset_name": "x", "configuration": "3d_fullres",
                        "labels": {"background": 0}, "folds": ["3d_fullres/fold_0"]})
    bomb = zip_bomb(tmp_path / "model.zip", "3d_fullres/fold_0/checkpoint_final.pt", {"model.json": model})
    assert bomb.stat().st_size < 2 * 2**20
    output = assert_refused(run_limited("import-model", str(bomb), "-o", str(tmp_path / "out"), cwd=tmp_path),
                            "model.zip", "bomb")
    assert "Nothing was extracted" in output
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".import_*"))


def test_a_tar_gz_with_a_bomb_is_refused_and_an_archive_that_lies_about_a_size_stops(tmp_path):
    with pytest.raises(FileLimitError, match="bomb"):
        extract_archive(tar_bomb(tmp_path / "data.tar.gz"), tmp_path / "out")
    assert not (tmp_path / "out").exists()

    # a zip entry whose header declares fewer bytes than its data unpacks to: the counted copy stops at the first
    honest = tmp_path / "honest.zip"
    with zipfile.ZipFile(honest, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("dataset/a.txt", b"x" * 100_000)
    data = bytearray(honest.read_bytes())
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # local header and central directory: uncompressed size field
        at = data.index(header)
        offset = at + (22 if header == b"PK\x03\x04" else 24)
        data[offset:offset + 4] = struct.pack("<I", 1000)
    liar = tmp_path / "liar.zip"
    liar.write_bytes(bytes(data))
    with pytest.raises((FileLimitError, zipfile.BadZipFile)):
        extract_archive(liar, tmp_path / "liar")
    assert not (tmp_path / "liar" / "dataset" / "a.txt").exists() or \
        (tmp_path / "liar" / "dataset" / "a.txt").stat().st_size <= 1000


# --------------------------------------------------------------------------------------------------- downloads


class Endless(http.server.BaseHTTPRequestHandler):
    """Sends ``server.body`` and, for /endless, keeps sending zeros without a Content-Length."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path == "/endless":
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for _ in range(64):  # 64 MiB at most, far past any manifest size here
                    self.wfile.write(bytes(2**20))
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)


@pytest.fixture()
def endless_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    httpd.body = bytes(5000)
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def manifest(size: int, sources: list[str]) -> Manifest:
    return Manifest.from_dict({
        "name": "hostile", "description": "x", "license": "x", "citation": "x", "layout": "msd", "modality": "MRI",
        "dimensionality": 3, "spacing": "1 mm", "expected_cases": 1,
        "files": [{"filename": "data.tar.gz", "hash": "sha256:" + "0" * 64, "size": size, "sources": sources,
                   "extract": True}]})


def test_downloads_stop_at_the_declared_size_and_refuse_a_size_no_disk_has(tmp_path, endless_server):
    with pytest.raises(DiskFullError, match="data.tar.gz is declared as 1024.0 TiB"):
        download(manifest(2**50, [endless_server.url + "/endless"]), tmp_path / "a", progress=False)
    # a server that sends past the declared size: stopped there (then no source is left)
    with pytest.raises(DownloadError) as info:
        download(manifest(10_000, [endless_server.url + "/endless"]), tmp_path / "b", progress=False)
    assert "more than the 10,000 bytes the manifest declares" in str(info.value)
    # one that announces more than declared is not read from at all
    with pytest.raises(DownloadError, match="announces 5,000 bytes, the manifest declares 1,000"):
        download(manifest(1000, [endless_server.url + "/file"]), tmp_path / "c", progress=False)
    assert not any(p.stat().st_size > 10_000 for p in tmp_path.rglob("*") if p.is_file())
    assert issubclass(ChecksumError, DownloadError)


# --------------------------------------------------------------------------------------------------- images


def nifti_header_gz(path: Path, shape: tuple[int, ...], dtype=np.float32, *, nifti2: bool = False,
                    data_bytes: int = 1024) -> Path:
    """A valid NIfTI header declaring ``shape``, followed by only ``data_bytes`` of zeros, gzipped."""
    cls = nib.Nifti2Header if nifti2 else nib.Nifti1Header
    header = cls()
    header.set_data_dtype(dtype)
    header.set_data_shape(shape)
    header.set_zooms((1.0,) * len(shape))
    raw = io.BytesIO()
    header.write_to(raw)
    raw.write(bytes(int(header.get_data_offset()) - raw.tell()))
    path.write_bytes(gzip.compress(raw.getvalue() + bytes(data_bytes)))
    return path


def png_bomb(path: Path, side: int = 100_000) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(side + 1)))
                     + chunk(b"IEND", b""))
    return path


def tiff_bomb(path: Path, side: int = 100_000) -> Path:
    """A little-endian TIFF whose one page declares side x side 8-bit pixels in one strip of 16 bytes."""
    entries = [(256, 4, 1, side), (257, 4, 1, side), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 9 + 4), (277, 3, 1, 1), (278, 4, 1, side), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII" if kind == 4 else "<HHIHxx", tag, kind, count, value)
        for tag, kind, count, value in entries) + struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(16))
    return path


def itk_header(path: Path, data_file: str) -> Path:
    if path.suffix == ".mhd":
        path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_UCHAR\n"
                        f"ElementSpacing = 1 1 1\nElementDataFile = {data_file}\n")
    else:
        path.write_text("NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 4 4\nencoding: raw\nspacings: 1 1 1\n"
                        f"data file: {data_file}\n\n")
    return path


def dataset_with(tmp_path: Path, replace: Path | None = None, *, label: Path | None = None) -> tuple[Path, str]:
    """Two real cases of the bundled sample, the first one's image (or label) replaced by a crafted file."""
    root = msd_dataset(tmp_path / "dataset", 2)
    case = sample_ids(1)[0]
    if replace is not None:
        replace.replace(root / "imagesTr" / f"{case}.nii.gz")
    if label is not None:
        label.replace(root / "labelsTr" / f"{case}.nii.gz")
    return root, case


@pytest.mark.parametrize("kind", ["nifti1_bomb", "nifti2_bomb"])
def test_inspect_refuses_an_image_whose_header_declares_more_than_the_memory(tmp_path, kind):
    crafted = nifti_header_gz(tmp_path / "crafted.nii.gz", (100_000, 100_000, 100_000) if kind == "nifti2_bomb"
                              else (2048, 2048, 2048), nifti2=kind == "nifti2_bomb")
    assert crafted.stat().st_size < 10_000
    root, case = dataset_with(tmp_path, crafted)
    output = assert_refused(run_limited("inspect", str(root), cwd=tmp_path), case)
    assert "not read" in output or "image_too_large" in output


def test_a_gzip_stream_is_read_only_as_far_as_its_header_declares(tmp_path):
    """A header of 10x10x10 voxels followed by 300 MiB of zeros: reading decompresses the 1,000 voxels, not more."""
    header = nifti_header_gz(tmp_path / "small.nii.gz", (10, 10, 10), np.uint8, data_bytes=0)
    raw = gzip.decompress(header.read_bytes())
    with gzip.open(tmp_path / "tail.nii.gz", "wb", compresslevel=1) as f:
        f.write(raw)
        for block in zeros(300 * 2**20):
            f.write(block)
    script = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30)); "
              "from tutorseg.data.imageio import read_image; "
              f"print(read_image({str(tmp_path / 'tail.nii.gz')!r}).array.shape)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "(1, 10, 10, 10)" in result.stdout, result.stderr


@pytest.mark.parametrize("make", [png_bomb, tiff_bomb], ids=["png", "tiff"])
def test_2d_decompression_bombs_are_refused_by_name(tmp_path, make):
    crafted = make(tmp_path / ("bomb.png" if make is png_bomb else "bomb.tif"))
    with pytest.raises(TutorsegError, match=crafted.name) as info:
        read_image(crafted)
    assert "bomb" in str(info.value) or "not read" in str(info.value)


@pytest.mark.parametrize("ending,data_file", [(".mhd", "/etc/hostname"), (".nrrd", "../../secret.raw"),
                                              (".mhd", "LIST\n/etc/hostname")])
def test_an_itk_header_may_only_name_a_data_file_beside_it(tmp_path, ending, data_file):
    secret = tmp_path / "secret.raw"
    secret.write_bytes(bytes(range(64)))
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    header = itk_header(folder / f"image{ending}", data_file)
    with pytest.raises(TutorsegError, match="outside the header's folder"):
        read_image(header)
    # beside it, it reads
    (folder / "voxels.raw").write_bytes(bytes(64))
    assert read_image(itk_header(folder / f"ok{ending}", "voxels.raw")).array.shape == \
        (1, 4, 4, 4)


def test_nan_voxels_and_impossible_label_values_are_refused_where_images_are_read(tmp_path, sample_dir):
    case = sample_ids(1)[0]
    image = nib.load(sample_dir / "imagesTr" / f"{case}.nii.gz")
    data = np.asarray(image.dataobj, dtype=np.float32)
    data[5, 5, 5] = np.nan
    nan_file = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, image.affine), nan_file)
    root, _ = dataset_with(tmp_path, nan_file)
    dataset = tutorseg.load_dataset(root)
    with pytest.raises(TutorsegError, match=f"case {case}: .* NaN/Inf"):
        dataset.case(case).load_image()  # fingerprint, preprocess and predict read through this
    with pytest.raises(TutorsegError, match=case):
        tutorseg.fingerprint(root, num_workers=1, progress=False)

    label = nib.load(sample_dir / "labelsTr" / f"{case}.nii.gz")
    huge = np.asarray(label.dataobj).astype(np.float64)
    huge[huge == 1] = 1e29
    huge_file = tmp_path / "huge.nii.gz"
    nib.save(nib.Nifti1Image(huge, label.affine), huge_file)
    root2, _ = dataset_with(tmp_path / "2", label=huge_file)
    with pytest.raises(TutorsegError, match="label maps hold class indices"):
        tutorseg.load_dataset(root2).case(case).load_label()


# --------------------------------------------------------------------------------------------------- JSON


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_deep_or_huge_json_is_refused_by_name_everywhere_it_is_read(tmp_path, sample_dir):
    with pytest.raises(FileLimitError, match=f"more than {MAX_JSON_DEPTH} levels"):
        parse_json(nested(100_000), source="x.json")  # the parser's recursion would fail here
    with pytest.raises(FileLimitError, match="levels"):
        parse_json(nested(MAX_JSON_DEPTH + 1), source="x.json")
    assert parse_json(nested(3), source="x.json") == [[[]]]

    deep = tmp_path / "plan.json"
    deep.write_text('{"a": ' + nested(50_000) + "}")
    root = msd_dataset(tmp_path / "ds", 1)
    for args in (["plan", str(deep)], ["download", str(deep), "-o", "out"],
                 ["train", str(root), "--plan", str(deep), "-o", "run"]):
        assert_refused(run_limited(*args, cwd=tmp_path), "plan.json")
    (root / "dataset.json").write_text(nested(50_000))
    assert_refused(run_limited("inspect", str(root), cwd=tmp_path), "dataset.json")


# --------------------------------------------------------------------------------------------------- plans


@pytest.mark.parametrize("field,value,complaint", [
    ("patch_size", [-8, 40, 40], "patch size per axis -8"),
    ("patch_size", [10**6, 40, 40], "patch size per axis 1000000"),
    ("spacing", [1e5, 1, 1], "spacing (mm) 100000.0"),
    ("features_per_stage", [10**9, 64, 128, 256], "features per stage 1000000000"),
])
def test_a_plan_with_values_no_plan_has_is_refused_where_it_is_read(tmp_path, sample_fingerprint, field, value,
                                                                     complaint):
    plan = tutorseg.plan(sample_fingerprint, preset="cpu").to_dict()
    configuration = plan["configurations"]["3d_fullres"]
    configuration[field] = value[: len(configuration[field])] + configuration[field][len(value):]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(ArtefactError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        tutorseg.Plan.load(tmp_path / "plan.json")
    plan["labels"]["Anterior"] = 10**29
    (tmp_path / "labels.json").write_text(json.dumps(plan))
    with pytest.raises(ArtefactError, match="label value"):
        tutorseg.Plan.load(tmp_path / "labels.json")


def test_a_fingerprint_with_impossible_geometry_is_refused_where_it_is_read(tmp_path, sample_fingerprint):
    data = sample_fingerprint.to_dict()
    data["cases"][0]["spacing"] = [1e5, 1.0, 1.0]
    (tmp_path / "fingerprint.json").write_text(json.dumps(data))
    with pytest.raises(ArtefactError, match=f"case {data['cases'][0]['case_id']}: spacing 100000.0 mm"):
        tutorseg.DatasetFingerprint.load(tmp_path / "fingerprint.json")
    data = sample_fingerprint.to_dict()
    data["cases"][1]["shape_before_crop"] = [-4, 10, 10]
    data["labels"]["Anterior"] = 10**29
    (tmp_path / "fingerprint.json").write_text(json.dumps(data))
    with pytest.raises(ArtefactError, match="label values outside"):
        tutorseg.DatasetFingerprint.load(tmp_path / "fingerprint.json")


# --------------------------------------------------------------------------------------------------- checkpoints


class Payload:
    """Pickles into a call that writes a file: what a hostile checkpoint would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_checkpoints_with_code_or_of_another_kind_are_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran.txt"
    torch.save({"network": {}, "payload": Payload(marker)}, tmp_path / "pickled.pt")
    with pytest.raises(TutorsegError) as info:
        load_checkpoint(tmp_path / "pickled.pt")
    assert "pickled.pt" in str(info.value) and "must not be loaded" in str(info.value)
    assert "weights_only=False" not in str(info.value) and not marker.exists()

    torch.save(torch.nn.Conv3d(1, 2, 3).state_dict(), tmp_path / "state_dict.pt")
    with pytest.raises(TutorsegError, match="plain PyTorch state_dict"):
        load_checkpoint(tmp_path / "state_dict.pt")
    torch.save({"network_weights": {}, "init_args": {}, "trainer_name": "nnUNetTrainer"}, tmp_path / "nnunet.pt")
    with pytest.raises(TutorsegError, match="nnU-Net's checkpoint fields"):
        load_checkpoint(tmp_path / "nnunet.pt")
    torch.save({"format": 1, "network": {}, "configuration": "3d_fullres", "n_channels": 10**9, "n_classes": 3},
               tmp_path / "channels.pt")
    with pytest.raises(TutorsegError, match="1000000000 input channels"):
        load_checkpoint(tmp_path / "channels.pt")


def test_a_model_file_naming_folds_outside_itself_is_refused(tmp_path):
    model = tmp_path / "model.zip"
    with zipfile.ZipFile(model, "w") as archive:
        archive.writestr("model.json", json.dumps({
            "format": "tutorseg model 1", "dataset_name": "x", "configuration": "3d_fullres",
            "labels": {"background": 0}, "folds": ["../../elsewhere"]}))
        archive.writestr("3d_fullres/fold_0/checkpoint_final.pt", b"")
    with pytest.raises(TutorsegError, match="not a folder of the model"):
        import_model(model, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert file_hash(model)  # the file itself is untouched and still readable
