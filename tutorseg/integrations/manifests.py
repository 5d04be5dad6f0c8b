"""Data manifests: what a dataset is, where to fetch it, and how to check that it arrived whole.

A manifest is a small JSON file (``data_manifests/*.json`` ships with tutorseg; schema in
``data_manifests/manifest.schema.json``), in the spirit of scikit-image's dataset registry::

    {"name": "Task04_Hippocampus", "license": "CC-BY-SA 4.0", "layout": "msd", "expected_cases": 260, ...,
     "files": [{"filename": "Task04_Hippocampus.tar", "hash": "md5:9d24...", "size": null, "extract": true,
                "sources": ["gdrive:1RzPB1_...", "https://msd-for-monai.s3-us-west-2.amazonaws.com/..."]}]}

:func:`tutorseg.download` reads it; instructors write one with :func:`create_manifest`
(``tutorseg manifest create FOLDER``), which packs and hashes the dataset and leaves the Drive file id to fill in.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from tutorseg.data.files import write_json_atomic
from tutorseg.data.limits import FileLimitError, read_json_file
from tutorseg.data.problems import TutorsegError
from tutorseg.integrations.archives import extract_archive, file_hash, find_dataset_folder, pack_folder, parse_hash

SCHEMA_FILENAME = "manifest.schema.json"

# The Drive file id written by `tutorseg manifest create` until the instructor has uploaded the archive. It matches
# the schema (so the manifest validates) and the downloader recognises it and says what is missing.
PLACEHOLDER_DRIVE_ID = "PASTE_THE_DRIVE_FILE_ID_HERE"
PLACEHOLDER_SOURCE = f"gdrive:{PLACEHOLDER_DRIVE_ID}"

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz", ".zip")


class ManifestError(TutorsegError):
    """A manifest cannot be found, read or validated, or a dataset cannot be turned into one."""


# --------------------------------------------------------------------------------------------------- the artefact


@dataclass(frozen=True)
class ManifestFile:
    """One file of a dataset: what it is called, how to check it, where to fetch it.

    Attributes:
        filename: plain file name, saved as such in the download folder.
        hash: ``"sha256:HEX"`` or ``"md5:HEX"``, checked before the file is used.
        size: bytes, or ``None`` where the publisher states none.
        sources: tried in order: ``"gdrive:FILE_ID"`` (fetched with gdown) or ``"https://..."``.
        extract: unpack the tar or zip archive after download.
        path: where the file goes inside the manifest's ``folder`` (``"_raw/image/0.png"``); ``None``: ``filename``.
            Only for manifests of separate files (with a ``folder``).
    """

    filename: str
    hash: str
    size: int | None
    sources: tuple[str, ...]
    extract: bool
    path: str | None = None

    @property
    def hash_algorithm(self) -> str:
        return parse_hash(self.hash)[0]

    @property
    def usable_sources(self) -> tuple[str, ...]:
        """Sources that can be tried: all but the Drive id placeholder of a manifest not yet hosted."""
        return tuple(s for s in self.sources if not is_placeholder(s))

    @property
    def relative_path(self) -> str:
        """Where the file goes inside the manifest's folder."""
        return self.path or self.filename

    def to_dict(self) -> dict:
        data = {**asdict(self), "sources": list(self.sources)}
        if self.path is None:
            del data["path"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ManifestFile":
        return cls(data["filename"], data["hash"], data.get("size"), tuple(data["sources"]), bool(data["extract"]),
                   data.get("path"))


@dataclass(frozen=True)
class BuildStep:
    """How the separate files of a manifest become a dataset: a folder of images and one of masks, converted.

    The conversion is :func:`tutorseg.integrations.convert.convert_folders`, the one a user runs on their own
    folders; a manifest names only its settings (no code travels in a manifest).

    Attributes:
        images: the folder of images, inside the manifest's folder (``"_raw/image"``).
        masks: the folder of masks named like the images (``"_raw/label"``).
        case_ids: case names, a format with ``{stem}``, the shared file name (``"isbi2012_{stem:0>3}"``).
        mask_values: ``{mask value: class value}`` for every value in the masks.
        channel_names: ``{channel: name}`` for ``dataset.json`` (the name decides the normalisation).
        labels: ``{label name: class value}`` for ``dataset.json``.
        description: the ``description`` of ``dataset.json``.
    """

    images: str
    masks: str
    case_ids: str
    mask_values: dict[int, int]
    channel_names: dict[int, str]
    labels: dict[str, int]
    description: str

    def to_dict(self) -> dict:
        return {"convert": "image_and_mask_folders", "images": self.images, "masks": self.masks,
                "case_ids": self.case_ids, "mask_values": {str(k): v for k, v in self.mask_values.items()},
                "channel_names": {str(k): v for k, v in self.channel_names.items()}, "labels": dict(self.labels),
                "description": self.description}

    @classmethod
    def from_dict(cls, data: dict) -> "BuildStep":
        return cls(data["images"], data["masks"], data["case_ids"],
                   {int(k): int(v) for k, v in data["mask_values"].items()},
                   {int(k): v for k, v in data["channel_names"].items()}, dict(data["labels"]), data["description"])


@dataclass(frozen=True)
class Manifest:
    """A dataset's registry entry: description, licence, citation, physical facts and files.

    Attributes:
        name: what ``tutorseg download NAME`` matches (case-insensitive).
        description: one or two sentences.
        license: the licence as the publisher states it.
        citation: what to cite when using the data.
        layout: ``"msd"`` or ``"nnunetv2"``: the folder layout inside the archive.
        modality: ``"MRI"``, ``"EM"``...
        dimensionality: 2 or 3.
        spacing: physical voxel or pixel size, in words (``"1 x 1 x 1 mm"``).
        expected_cases: labelled training cases in the dataset folder, checked after extraction.
        files: the files to fetch.
        expected_test_cases: unlabelled test images, or ``None`` if not stated.
        image_size: typical image size, in words.
        homepage: where the dataset is published.
        notes: provenance and caveats.
        folder: for a manifest of separate files (no archive): the dataset folder they are placed in, each at its
            ``path``; ``None`` for a manifest of archives.
        build: how the files placed in ``folder`` become the dataset (a :class:`BuildStep`), or ``None``.
        path: the JSON file it was read from, if any.
    """

    name: str
    description: str
    license: str
    citation: str
    layout: str
    modality: str
    dimensionality: int
    spacing: str
    expected_cases: int
    files: tuple[ManifestFile, ...]
    expected_test_cases: int | None = None
    image_size: str = ""
    homepage: str = ""
    notes: str = ""
    folder: str | None = None
    build: BuildStep | None = None
    path: Path | None = field(default=None, compare=False)

    @property
    def is_hosted(self) -> bool:
        """False while some file has no source but the Drive id placeholder (instructor has not uploaded it yet)."""
        return all(f.usable_sources for f in self.files)

    def to_dict(self) -> dict:
        data = {"name": self.name, "description": self.description, "license": self.license,
                "citation": self.citation, "homepage": self.homepage, "notes": self.notes, "layout": self.layout,
                "modality": self.modality, "dimensionality": self.dimensionality, "spacing": self.spacing,
                "image_size": self.image_size, "expected_cases": self.expected_cases,
                "expected_test_cases": self.expected_test_cases, "folder": self.folder,
                "build": self.build.to_dict() if self.build else None, "files": [f.to_dict() for f in self.files]}
        optional = ("homepage", "notes", "image_size", "expected_test_cases", "folder", "build")
        return {k: v for k, v in data.items() if not (k in optional and v in ("", None))}

    @classmethod
    def from_dict(cls, data: dict, *, path: Path | None = None) -> "Manifest":
        """Build from a dict, validating it against the schema first.

        Raises:
            ManifestError: the dict breaks the schema; the message lists every violation.
        """
        validate_manifest(data, where=str(path) if path else "manifest")
        _check_folder_rules(data, where=str(path) if path else "manifest")
        build = data.get("build")
        return cls(name=data["name"], description=data["description"], license=data["license"],
                   citation=data["citation"], layout=data["layout"], modality=data["modality"],
                   dimensionality=data["dimensionality"], spacing=data["spacing"],
                   expected_cases=data["expected_cases"],
                   files=tuple(ManifestFile.from_dict(f) for f in data["files"]),
                   expected_test_cases=data.get("expected_test_cases"), image_size=data.get("image_size", ""),
                   homepage=data.get("homepage", ""), notes=data.get("notes", ""), folder=data.get("folder"),
                   build=BuildStep.from_dict(build) if build else None, path=path)

    def save(self, path: str | os.PathLike) -> Path:
        """Write as indented JSON (temporary file, then moved into place)."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Manifest":
        """Read and validate a manifest file.

        Raises:
            ManifestError: missing file, invalid JSON, or a schema violation.
        """
        path = Path(path)
        try:
            data = read_json_file(path)
        except FileLimitError as exc:
            raise ManifestError(str(exc)) from None
        except FileNotFoundError:
            raise ManifestError(f"manifest file not found: {path}") from None
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                                "fix the file or write it again with `tutorseg manifest create`") from None
        return cls.from_dict(data, path=path)

    def __repr__(self) -> str:
        hosted = "" if self.is_hosted else ", NOT HOSTED YET (Drive id placeholder)"
        return (f"Manifest({self.name!r}: {self.modality} {self.dimensionality}D, {self.expected_cases} labelled cases, "
                f"{self.spacing}, layout={self.layout}, license={_clip(self.license)!r}, {len(self.files)} file(s){hosted})")

    def _repr_html_(self) -> str:
        rows = [("name", self.name), ("description", self.description), ("modality", self.modality),
                ("dimensions", f"{self.dimensionality}D"), ("spacing", self.spacing),
                ("labelled cases", str(self.expected_cases)), ("layout", self.layout), ("license", self.license),
                ("citation", self.citation)]
        rows += [(f"file {i}", f"{f.filename} ({_size_text(f.size)}, {f.hash[:16]}..., "
                               f"{len(f.usable_sources)} source(s))") for i, f in enumerate(self.files)]
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
                       f"{html.escape(v)}</td></tr>" for k, v in rows)
        return f"<table>{body}</table>"


def _clip(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _size_text(size: int | None) -> str:
    return "size not stated" if size is None else f"{size / 2**20:.1f} MiB"


def is_placeholder(source: str) -> bool:
    """True for the Drive id placeholder that `tutorseg manifest create` writes."""
    return source == PLACEHOLDER_SOURCE


# --------------------------------------------------------------------------------------------------- schema, lookup


def shipped_manifests_dir() -> Path:
    """The folder of manifests shipped with tutorseg.

    It is ``data_manifests/`` of the repository, installed as the package ``tutorseg.data_manifests``.
    """
    try:
        folder = Path(str(resources.files("tutorseg.data_manifests")))
    except ModuleNotFoundError:  # an editable install made before data_manifests/ was mapped into the package
        folder = Path(__file__).resolve().parents[2] / "data_manifests"
    if not (folder / SCHEMA_FILENAME).is_file():
        raise ManifestError(f"the shipped manifests are missing (looked in {folder}); reinstall tutorseg")
    return folder


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """The JSON schema every manifest follows."""
    return json.loads((shipped_manifests_dir() / SCHEMA_FILENAME).read_text(encoding="utf-8"))


def validate_manifest(data: dict, *, where: str = "manifest") -> None:
    """Check a manifest dict against the schema.

    Raises:
        ManifestError: listing every violation with its place (``files/0/hash: 'abc' does not match ...``).
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"  {'/'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in errors]
        raise ManifestError(f"{where} does not follow the manifest schema ({SCHEMA_FILENAME}):\n" + "\n".join(lines))


def _check_folder_rules(data: dict, *, where: str) -> None:
    """What the schema cannot say: separate files (``path``, ``build``) need a ``folder``; a folder takes no archives.

    Raises:
        ManifestError: listing every broken rule.
    """
    folder = data.get("folder")
    problems = []
    if data.get("build") and not folder:
        problems.append("build: a build step needs a 'folder' to build the dataset in")
    for i, entry in enumerate(data["files"]):
        if entry.get("path") and not folder:
            problems.append(f"files/{i}/path: a file 'path' needs a 'folder' to place it in")
        if folder and entry["extract"]:
            problems.append(f"files/{i}/extract: a manifest with a 'folder' holds separate files, not archives")
    places = [entry.get("path") or entry["filename"] for entry in data["files"]]
    problems += [f"files: two files go to {p!r}" for p in sorted({p for p in places if places.count(p) > 1})]
    if problems:
        raise ManifestError(f"{where} breaks the manifest rules:\n  " + "\n  ".join(problems))


def shipped_manifests() -> dict[str, Path]:
    """Name -> file of every manifest shipped with tutorseg."""
    folder = shipped_manifests_dir()
    return {path.stem: path for path in sorted(folder.glob("*.json")) if path.name != SCHEMA_FILENAME}


def find_manifest(name_or_path: "str | os.PathLike | Manifest") -> Manifest:
    """A :class:`Manifest` from a shipped manifest's name (case-insensitive), a ``.json`` path, or a Manifest.

    Raises:
        ManifestError: no such name or file (the message lists the shipped names), or an invalid manifest.
    """
    if isinstance(name_or_path, Manifest):
        return name_or_path
    text = str(name_or_path)
    if text.endswith(".json") or os.sep in text or Path(text).is_file():
        return Manifest.load(text)
    shipped = shipped_manifests()
    for name, path in shipped.items():
        if name.lower() == text.lower():
            return Manifest.load(path)
    raise ManifestError(f"no manifest named {text!r}. Shipped manifests: {', '.join(shipped) or 'none'}; "
                        "or give the path of a manifest .json file")


# --------------------------------------------------------------------------------------------------- for instructors


def _dataset_facts(dataset_folder: Path) -> dict:
    """Manifest fields read from a dataset folder: layout, modality, dimensionality, spacing, case counts."""
    from tutorseg.data.dataset import load_dataset

    ds = load_dataset(dataset_folder)
    meta = ds.metadata
    first = (ds.training or ds.test)[0].geometry()
    spacing = " x ".join(f"{s:g}" for s in first.spacing)
    return {
        "description": meta.get("description") or f"{ds.name} ({ds.layout} layout)",
        "license": meta.get("licence") or meta.get("license") or "not stated in dataset.json: ask the data's owner",
        "citation": meta.get("reference") or meta.get("citation") or "not stated in dataset.json: ask the data's owner",
        "layout": ds.layout,
        "modality": ", ".join(ds.channel_names.values()) or "not stated",
        "dimensionality": 2 if ds.is_2d_format else 3,
        "spacing": f"{spacing} ({'pixel units unless dataset.json says otherwise' if ds.is_2d_format else 'mm'}), "
                   f"first case",
        "image_size": " x ".join(map(str, first.shape)) + " (first case)",
        "expected_cases": len(ds.training),
        "expected_test_cases": len(ds.test),
    }


def _check_dataset(dataset_folder: Path) -> None:
    """Run :func:`tutorseg.inspect_dataset` and refuse a dataset with errors, showing the whole report."""
    from tutorseg.inspection.checks import inspect_dataset

    report = inspect_dataset(dataset_folder, progress=False)
    if report.errors:
        raise ManifestError(f"{dataset_folder.name} has {len(report.errors)} error(s); fix them before sharing the "
                            f"dataset (learners would meet the same errors):\n{report}")


def _archive_stem(path: Path) -> str:
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def sharing_instructions(manifest_path: str | os.PathLike, archive: str | os.PathLike) -> str:
    """What an instructor does after :func:`create_manifest`: upload, share, paste the Drive file id."""
    return (
        f"Next steps to host this dataset on Google Drive:\n"
        f"  1. Upload {Path(archive).name} to Google Drive.\n"
        f"  2. Right-click it > Share > General access: 'Anyone with the link' (Viewer). Without this, gdown\n"
        f"     cannot fetch it and learners see 'the file is not shared publicly'.\n"
        f"  3. Copy the link; the file id is the part after /d/ in https://drive.google.com/file/d/FILE_ID/view\n"
        f"  4. In {Path(manifest_path).name}, replace {PLACEHOLDER_DRIVE_ID} with that id (keep the 'gdrive:').\n"
        f"     You may add an https:// mirror as a second source.\n"
        f"  5. Check it: tutorseg download {Path(manifest_path).name} --to /tmp/check\n"
        f"Drive limits how often a popular file can be downloaded per day; for a large class, also give a mirror.")


def create_manifest(source: str | os.PathLike, *, out_dir: str | os.PathLike | None = None, name: str | None = None,
                    check: bool = True, verbose: bool = True) -> Path:
    """Pack (if needed), check and hash a dataset, and write its manifest, ready for hosting on Google Drive.

    A folder is checked with :func:`tutorseg.inspect_dataset` (refused if the report holds errors), packed into
    ``OUT/NAME.tar.gz`` deterministically (same files, same bytes, same hash) and hashed with SHA-256. An existing
    archive is checked the same way after a safe extraction into a temporary folder, and hashed as it is.
    The manifest's only source is a Drive id placeholder; :func:`sharing_instructions` says how to fill it in.

    Args:
        source: a dataset folder (holding ``dataset.json``) or a ``.tar.gz`` / ``.tar`` / ``.zip`` archive of one.
        out_dir: folder for the archive and ``NAME.json`` (default: beside ``source``).
        name: dataset name (default: the folder's or archive's name).
        check: run :func:`tutorseg.inspect_dataset` first (reads every case).
        verbose: print the next steps (upload, share 'Anyone with the link', paste the file id).

    Returns:
        Path of the manifest written.

    Raises:
        ManifestError: ``source`` is missing, is not a dataset, or its dataset has errors.
    """
    source = Path(source).expanduser().resolve()
    out_dir = Path(out_dir) if out_dir is not None else source.parent
    if source.is_dir():
        dataset_folder = source
        if not (dataset_folder / "dataset.json").is_file():
            raise ManifestError(f"{source} holds no dataset.json; give the dataset folder itself "
                                "(the one with dataset.json and imagesTr/)")
        name = name or source.name
        if check:
            _check_dataset(dataset_folder)
        facts = _dataset_facts(dataset_folder)
        archive = pack_folder(dataset_folder, out_dir / f"{name}.tar.gz")
    elif source.is_file():
        name = name or _archive_stem(source)
        with tempfile.TemporaryDirectory(prefix="tutorseg-manifest-") as tmp:
            extract_archive(source, tmp)
            found = find_dataset_folder(tmp)
            if found is None:
                raise ManifestError(f"{source.name} holds no dataset.json; pack the dataset folder itself")
            if check:
                _check_dataset(found)
            facts = _dataset_facts(found)
        archive = source
        if archive.parent != out_dir.resolve():
            out_dir.mkdir(parents=True, exist_ok=True)
            archive = Path(shutil.copy2(source, out_dir / source.name))
    else:
        raise ManifestError(f"{source} does not exist; give a dataset folder or an archive of one")

    size = archive.stat().st_size
    entry = {"filename": archive.name, "hash": file_hash(archive, "sha256"), "size": size,
             "sources": [PLACEHOLDER_SOURCE], "extract": True}
    manifest = Manifest.from_dict({"name": name, **facts, "files": [entry]})
    manifest_path = manifest.save(out_dir / f"{name}.json")
    if verbose:
        print(f"archive:  {archive} ({_size_text(size)}, {entry['hash']})")
        print(sharing_instructions(manifest_path, archive))
    return manifest_path
