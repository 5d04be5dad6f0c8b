"""Manifests: every shipped manifest validates, the schema catches mistakes, instructors' `manifest create` works."""

from __future__ import annotations

import json
import re
import shutil
import tarfile

import jsonschema
import pytest

from tutorseg.cli import main
from tutorseg.integrations.archives import UnsafeArchiveError, extract_archive, file_hash, pack_folder
from tutorseg.integrations.manifests import (
    PLACEHOLDER_SOURCE,
    Manifest,
    ManifestError,
    create_manifest,
    find_manifest,
    load_schema,
    shipped_manifests,
    shipped_manifests_dir,
)


def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(load_schema())


@pytest.mark.parametrize("name", ["Task04_Hippocampus", "ISBI2012_EM_membrane"])
def test_every_shipped_manifest_validates(name):
    path = shipped_manifests()[name]
    data = json.loads(path.read_text())
    jsonschema.validate(data, load_schema())  # with jsonschema itself, not only through our loader
    manifest = Manifest.load(path)
    assert manifest.name == name
    assert Manifest.from_dict(manifest.to_dict()) == manifest  # round trip


def test_shipped_manifests_are_all_tested():
    assert sorted(shipped_manifests()) == ["ISBI2012_EM_membrane", "Task04_Hippocampus"]


def test_hippocampus_manifest_holds_monais_published_facts():
    m = find_manifest("task04_hippocampus")  # names match case-insensitively
    (entry,) = m.files
    assert entry.hash == "md5:9d24dba78a72977dbd1d2e110310f31b"
    assert entry.sources == ("gdrive:1RzPB1_bqzQhlWvU-YGvZzhx2omcDh38C",
                             "https://msd-for-monai.s3-us-west-2.amazonaws.com/Task04_Hippocampus.tar")
    assert (m.layout, m.expected_cases, m.license, m.is_hosted) == ("msd", 260, "CC-BY-SA 4.0", True)


PLACEHOLDER_WORDS = ("PASTE", "PLACEHOLDER", "TODO", "FIXME", "example.com", "example.org", "localhost", "127.0.0.1")


@pytest.mark.parametrize("name", sorted(shipped_manifests()))
def test_no_shipped_manifest_has_a_placeholder_source(name):
    """Every file of every shipped manifest can be fetched from a real public host: no stand-in ids or hosts."""
    m = find_manifest(name)
    assert m.is_hosted, f"{name} has a file whose only source is the Drive id placeholder"
    for entry in m.files:
        assert entry.sources and entry.usable_sources == entry.sources, entry.filename
        for source in entry.sources:
            assert PLACEHOLDER_SOURCE != source and not any(w.lower() in source.lower() for w in PLACEHOLDER_WORDS)
            if source.startswith("gdrive:"):  # Drive file ids are 25 or more letters, digits, - and _
                assert len(source.removeprefix("gdrive:")) >= 25, source
            else:
                assert source.startswith("https://"), f"{name}: {source} is not https"
            if "github" in source:  # a branch moves; a commit does not
                assert re.search(r"/[0-9a-f]{40}/", source), f"{source} does not pin a commit"


def test_isbi_manifest_fetches_the_published_pngs_at_a_fixed_commit(isbi_dir):
    """60 files: image and label N.png of zhixuhao/unet at b45af4d, each hashed as the shared _raw/ copy is."""
    m = find_manifest("ISBI2012_EM_membrane")
    assert (m.folder, m.layout, m.expected_cases, len(m.files)) == ("ISBI2012_EM_membrane", "nnunetv2", 30, 60)
    commit = "b45af4d458437d8281cc218a07fd4380818ece4a"
    for entry in m.files:
        kind, number = entry.relative_path.removeprefix("_raw/").split("/")
        assert entry.sources[0] == (f"https://raw.githubusercontent.com/zhixuhao/unet/{commit}/data/membrane/train/"
                                    f"{kind}/{number}")
        published = isbi_dir / "_raw" / kind / number  # byte-identical to the repository's files (PROVENANCE.md)
        assert (file_hash(published, "sha256"), published.stat().st_size) == (entry.hash, entry.size)
        assert not entry.extract
    assert m.build is not None and m.build.mask_values == {0: 1, 255: 0}  # membrane is black in the published masks


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("license"), "'license' is a required property"),
    (lambda d: d["files"][0].update(hash="sha1:abc"), "files/0/hash"),
    (lambda d: d["files"][0].update(sources=["ftp://x"]), "files/0/sources/0"),
    (lambda d: d.update(layout="nnunetv1"), "layout"),
    (lambda d: d["files"][0].update(filename="../x.tar"), "files/0/filename"),
    (lambda d: d["files"][0].update(path="../../etc/x"), "files/0/path"),
    (lambda d: d.update(build={"convert": "run_my_script"}), "build"),
])
def test_schema_violations_are_listed(change, message):
    data = json.loads(shipped_manifests()["Task04_Hippocampus"].read_text())
    change(data)
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(data)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["files"][0].update(path="images/a.png"), "files/0/path: a file 'path' needs a 'folder'"),
    (lambda d: d.update(folder="Mine"), "files/0/extract: a manifest with a 'folder' holds separate files"),
])
def test_folder_rules_are_checked(change, message):
    data = json.loads(shipped_manifests()["Task04_Hippocampus"].read_text())
    change(data)
    with pytest.raises(ManifestError, match=message):
        Manifest.from_dict(data)


def test_a_build_step_needs_a_folder():
    data = json.loads(shipped_manifests()["ISBI2012_EM_membrane"].read_text())
    del data["folder"]
    with pytest.raises(ManifestError) as caught:
        Manifest.from_dict(data)
    assert "build: a build step needs a 'folder'" in str(caught.value)
    assert "files/59/path" in str(caught.value)  # every broken rule listed, not only the first


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ManifestError, match="Shipped manifests: ISBI2012_EM_membrane, Task04_Hippocampus"):
        find_manifest("Task99")


def test_invalid_json_file_names_line(tmp_path):
    (tmp_path / "broken.json").write_text('{"name": "x",\n "files": [}')
    with pytest.raises(ManifestError, match="not valid JSON \\(line 2"):
        find_manifest(tmp_path / "broken.json")


def test_repr_and_html():
    m = find_manifest("Task04_Hippocampus")
    assert "MRI 3D, 260 labelled cases" in repr(m)
    assert "<table>" in m._repr_html_() and "CC-BY-SA 4.0" in m._repr_html_()


def test_schema_ships_in_the_package_folder():
    assert (shipped_manifests_dir() / "manifest.schema.json").is_file()


# --------------------------------------------------------------------------------------------------- archives


def test_pack_folder_is_deterministic(sample_dir, tmp_path):
    first = pack_folder(sample_dir, tmp_path / "a" / "s.tar.gz")
    second = pack_folder(sample_dir, tmp_path / "b" / "s.tar.gz")
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        names = tar.getnames()
    assert names == sorted(names) and all(n.startswith(sample_dir.name + "/") for n in names)
    extracted = extract_archive(first, tmp_path / "x") / sample_dir.name
    assert (extracted / "dataset.json").read_bytes() == (sample_dir / "dataset.json").read_bytes()


def test_extract_refuses_non_archives(tmp_path):
    (tmp_path / "page.html").write_text("<html>Sign in</html>")
    with pytest.raises(UnsafeArchiveError, match="neither a tar nor a zip"):
        extract_archive(tmp_path / "page.html", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------- manifest create


def test_create_manifest_from_folder(sample_dir, tmp_path, capsys):
    path = create_manifest(sample_dir, out_dir=tmp_path, name="hippo_sample")
    m = Manifest.load(path)
    archive = tmp_path / "hippo_sample.tar.gz"
    assert m.files[0].filename == archive.name and m.files[0].hash == file_hash(archive)
    assert m.files[0].size == archive.stat().st_size and m.files[0].sources == (PLACEHOLDER_SOURCE,)
    assert (m.layout, m.modality, m.dimensionality, m.expected_cases, m.license) == ("msd", "MRI", 3, 25,
                                                                                       "CC-BY-SA 4.0")
    printed = capsys.readouterr().out
    assert "Anyone with the link" in printed and "PASTE_THE_DRIVE_FILE_ID_HERE" in printed


def test_create_manifest_from_archive(sample_dir, tmp_path):
    archive = pack_folder(sample_dir, tmp_path / "given.tar.gz")
    path = create_manifest(archive, out_dir=tmp_path / "out", check=False, verbose=False)
    m = Manifest.load(path)
    assert m.name == "given" and m.files[0].hash == file_hash(archive) and m.expected_cases == 25


def test_create_manifest_refuses_a_dataset_with_errors(sample_dir, tmp_path):
    broken = shutil.copytree(sample_dir, tmp_path / "broken")
    victim = sorted((broken / "labelsTr").glob("*.nii.gz"))[0]
    victim.write_bytes(b"not a nifti file")  # a label that cannot be read: inspect_dataset reports an error
    with pytest.raises(ManifestError, match=f"(?s)broken has \\d+ error.*{victim.stem.split('.')[0]}"):
        create_manifest(broken, out_dir=tmp_path / "out", verbose=False)
    assert not (tmp_path / "out").exists()


def test_cli_manifest_create(sample_dir, tmp_path, capsys):
    assert main(["manifest", "create", str(sample_dir), "-o", str(tmp_path), "--name", "s"]) == 0
    out = capsys.readouterr().out
    assert f"manifest written to {tmp_path / 's.json'}" in out and "Anyone with the link" in out
    assert main(["manifest", "create", str(tmp_path / "nothing"), "-o", str(tmp_path)]) == 1
    assert "does not exist" in capsys.readouterr().err
