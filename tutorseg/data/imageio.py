"""Reading and writing image files: NIfTI (nibabel), NRRD and MHA/MHD (SimpleITK), 2D PNG and TIFF (Pillow).

Axis conventions (the glossary in ``docs/glossary.md`` has them too):

- NIfTI arrays keep nibabel's voxel order ``(x, y, z)``; spacing comes from the header (``pixdim``) and the affine
  is kept so that predictions can be written back aligned with their input. nnU-Net reads the same files through
  SimpleITK, whose arrays are ``(z, y, x)``: every per-axis value in tutorseg is the reverse of nnU-Net's for 3D data.
- NRRD and MetaImage (``.mha``, ``.mhd`` + its raw file), what 3D Slicer and MITK save, are read with SimpleITK
  (nnU-Net's own reader for them) and brought to the same ``(x, y, z)`` order; their spacing, origin and direction
  become the same RAS affine nibabel gives for that image saved as NIfTI (ITK works in LPS: the x and y rows are
  negated). So a case reads the same in every format, and a prediction is written back in its input's format with
  the input's geometry (a Slicer user gets a ``.nrrd`` that overlays the image).
- 3D TIFF stacks (a multi-page ``.tif``, as microscopes save them) are read with tifffile into ``(x, y, z)``, as
  nnU-Net's ``Tiff3DIO`` reads them; TIFF keeps no usable voxel size, so the spacing comes from a sidecar JSON next
  to the file (``CASE_0000.json``: ``{"spacing": [z, y, x]}``, nnU-Net's convention, in the units you work in, e.g.
  micrometres) or else from the file's ImageJ tags; without either it is 1 per axis and the geometry says so (a note
  that ``tutorseg inspect`` reports as ``missing_spacing``). A single-page TIFF is a 2D image.
- 2D images are ``(rows, columns)`` with unit spacing, one slice, as nnU-Net's ``NaturalImage2DIO`` reads them.
- Images are returned channel-first: ``(C, *spatial)``. An RGB PNG has 3 channels; a 4D NIfTI of the Medical
  Segmentation Decathlon stores its channels in the 4th axis, which is moved to the front.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tutorseg.data.files import atomic_path
from tutorseg.data.limits import TOO_LARGE_FIX, memory_shortfall
from tutorseg.data.problems import ImageReadError, TutorsegError

if TYPE_CHECKING:
    from nibabel import Nifti1Image

NIFTI_ENDINGS = (".nii.gz", ".nii")
ITK_ENDINGS = (".nrrd", ".mha", ".mhd")  # read and written through SimpleITK
TIFF_ENDINGS = (".tif", ".tiff")  # one page: a 2D image; several: a 3D stack
IMAGE_2D_ENDINGS = (".png", *TIFF_ENDINGS)
SUPPORTED_ENDINGS = NIFTI_ENDINGS + ITK_ENDINGS + IMAGE_2D_ENDINGS
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])  # ITK's world axes (left, posterior, superior) to NIfTI's (right, anterior)


def file_ending(path: str | os.PathLike) -> str:
    """The ending tutorseg recognises (one of :data:`SUPPORTED_ENDINGS`, ``.nii.gz`` before ``.nii``), or ``""``."""
    name = Path(path).name.lower()
    for ending in SUPPORTED_ENDINGS:
        if name.endswith(ending):
            return ending
    return ""


def image_files_by_stem(folder: str | os.PathLike) -> dict[str, Path]:
    """Name without ending -> path, for the image files of a folder, sorted; hidden files are skipped.

    ``labelsTr/hippocampus_001.nii.gz`` gives ``{"hippocampus_001": ...}``: the case id of a label or prediction.
    """
    files = {}
    for path in sorted(Path(folder).iterdir()):
        ending = file_ending(path)
        if path.is_file() and ending and not path.name.startswith("."):
            files[path.name[: -len(ending)]] = path
    return files


def is_2d_format(path: str | os.PathLike) -> bool:
    """Whether the file is a 2D image: a PNG, or a TIFF of one page (a multi-page TIFF is a 3D stack)."""
    ending = file_ending(path)
    return ending == ".png" or (ending in TIFF_ENDINGS and not is_tiff_stack(path))


def is_tiff_stack(path: str | os.PathLike) -> bool:
    """True for a TIFF file holding a 3D stack (several pages, or ImageJ's ``slices``): read from its header."""
    path = Path(path)
    if file_ending(path) not in TIFF_ENDINGS or not path.is_file():
        return False
    try:
        import tifffile
    except ImportError:
        return False
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return len(tif.pages) > 1 and len(series.shape) >= 3 and not _is_colour(series)
    except (tifffile.TiffFileError, OSError, IndexError, ValueError):
        return False  # unreadable: the 2D reader explains what is wrong


def _is_colour(series) -> bool:
    """A single RGB picture stored as one TIFF series of shape (rows, cols, 3)."""
    return len(series.shape) == 3 and series.shape[-1] in (3, 4) and series.axes.endswith("S")


@dataclass(frozen=True)
class Geometry:
    """Where an image's voxels lie, read from the header without loading the voxels.

    Attributes:
        shape: spatial shape, ``(x, y, z)`` for NIfTI, ``(rows, columns)`` for 2D images.
        n_channels: number of channels the file holds (3 for RGB, the 4th axis of a 4D NIfTI, else 1).
        spacing: voxel size per spatial axis, in mm for NIfTI (1.0 for 2D images unless a dataset says otherwise).
        affine: 4x4 voxel-to-world matrix of a NIfTI file; ``None`` for 2D images.
        dtype: the stored data type (``"uint8"``, ``"float32"``...).
        notes: facts about the conversion worth telling a user ("alpha channel dropped").
    """

    shape: tuple[int, ...]
    n_channels: int
    spacing: tuple[float, ...]
    affine: np.ndarray | None
    dtype: str
    notes: tuple[str, ...] = ()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __eq__(self, other: object) -> bool:  # numpy arrays do not compare with ==
        if not isinstance(other, Geometry):
            return NotImplemented
        same_affine = (self.affine is None and other.affine is None) or (
            self.affine is not None and other.affine is not None and np.array_equal(self.affine, other.affine))
        return (self.shape, self.n_channels, self.spacing, self.dtype, self.notes) == (
            other.shape, other.n_channels, other.spacing, other.dtype, other.notes) and same_affine

    __hash__ = None  # type: ignore[assignment]  # a mutable numpy field: not hashable


@dataclass(frozen=True)
class Image:
    """Voxels of one file, channel first, with their geometry."""

    array: np.ndarray  # (C, *spatial)
    geometry: Geometry
    notes: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------------------------------- guards


def _refuse_if_too_large(path: Path, shape: Sequence[int], n_channels: int, dtype) -> None:
    """Before reading: the voxels the header declares must fit in the memory available (a forged header is refused)."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:  # a type numpy does not name (an ITK pixel type): counted as 8 bytes, the widest
        dtype = np.dtype("float64")
    voxels = math.prod(int(s) for s in shape) * max(int(n_channels), 1)
    what = f"{' x '.join(str(int(s)) for s in shape)} voxels x {n_channels} channel(s) of {dtype.name}"
    reason = memory_shortfall(voxels * dtype.itemsize, what=what)
    if reason is not None:
        raise ImageReadError(path, reason, TOO_LARGE_FIX, code="image_too_large")


# NRRD and MetaImage headers may name their voxels' file (a "detached" header): it must lie beside the header, else
# a forged header reads any file of the machine (its bytes would become voxels, and their histogram would travel
# in the fingerprint). The keys, as NRRD 0005 and MetaIO spell them.
_DATA_FILE_KEYS = {".nrrd": ("data file", "datafile"), ".nhdr": ("data file", "datafile"),
                   ".mhd": ("elementdatafile",), ".mha": ("elementdatafile",)}
_HEADER_BYTES = 64 * 1024  # a header is a few hundred bytes; an embedded NRRD/MHA header ends before its voxels


def detached_data_files(path: Path) -> list[str]:
    """The file names an NRRD/MetaImage header gives for its voxels (empty where they follow the header)."""
    keys = _DATA_FILE_KEYS.get(file_ending(path))
    if keys is None:
        return []
    with open(path, "rb") as f:
        head = f.read(_HEADER_BYTES).decode("latin-1")
    names: list[str] = []
    lines = head.splitlines()
    for i, line in enumerate(lines):
        key, sep, value = line.replace("=", ":", 1).partition(":")
        if not sep or key.strip().lower() not in keys:
            if file_ending(path) in (".nrrd", ".nhdr") and not line.strip():
                break  # the blank line that ends an NRRD header
            continue
        value = value.strip()
        if value.upper() == "LOCAL":
            return []
        if value.upper().startswith("LIST"):
            return [name.strip() for name in lines[i + 1:] if name.strip()]
        first = value.split()[0] if value else value
        names.append(first)
        break
    return names


def _refuse_data_files_outside(path: Path) -> None:
    folder = path.parent.resolve()
    for name in detached_data_files(path):
        target = (path.parent / name).resolve()
        if not target.is_relative_to(folder):
            raise ImageReadError(path, f"its header names {name!r} as the file of its voxels, which is outside the "
                                 "header's folder; a header may only name a file beside it, so the case is refused",
                                 "put the data file next to its header and name it without a folder (or save the "
                                 "image as one .nrrd/.mha/.nii.gz file)", code="data_file_outside")


# --------------------------------------------------------------------------------------------------- NIfTI

_NIFTI1_HEADER_SIZE = 348  # bytes; a single-file NIfTI-1 carries the magic b"n+1\0" at byte 344
_READ_CHUNK = 4 << 20  # bytes decompressed at a time into a volume's array (the temporary gzip makes per read)


def load_nifti(path: str | os.PathLike) -> Nifti1Image:
    """Open a NIfTI file: header, affine and a data proxy (the voxels are read on first use).

    NIfTI-1 is opened directly, skipping nibabel's format sniffing (~40% faster on small files); anything else goes
    through nibabel's general loader, which explains a bad header. NIfTI-2 images are ``Nifti1Image`` subclasses.
    """
    import nibabel as nib

    try:
        return nib.Nifti1Image.from_filename(str(path))
    except Exception:  # NIfTI-2, or a bad header: let nibabel's general loader decide and explain
        image = nib.load(str(path))
    if not isinstance(image, nib.Nifti1Image):
        raise ImageReadError(Path(path), f"not a NIfTI image (nibabel reads it as {type(image).__name__})",
                             "save it as NIfTI (.nii.gz)")
    return image


def _geometry_from_header(header, affine) -> Geometry:
    """Spatial shape, channels (a 4th axis), spacing and dtype from a nibabel NIfTI header."""
    shape = tuple(int(s) for s in header.get_data_shape())
    zooms = tuple(float(z) for z in header.get_zooms())
    n_channels = 1
    if len(shape) == 4:
        n_channels = shape[3]
        shape = shape[:3]
    return Geometry(shape, n_channels, zooms[: len(shape)], np.asarray(affine, dtype=np.float64),
                    str(header.get_data_dtype()))


def _nifti_geometry(path: Path) -> Geometry:

    try:
        img = load_nifti(path)
    except Exception as exc:  # nibabel raises several types for bad headers
        raise ImageReadError(path, f"not a readable NIfTI file ({exc})",
                             "re-export the file as NIfTI (.nii.gz), e.g. from 3D Slicer or with nibabel") from None
    return _geometry_from_header(img.header, img.affine)


def _refuse_dimensionality(path: Path, shape: tuple[int, ...]) -> None:
    spatial = shape[:3] if len(shape) == 4 else shape
    if len(spatial) != 3:
        raise ImageReadError(path, f"{len(shape)}D NIfTI of shape {shape}; tutorseg reads 3D volumes, with an optional "
                             "4th axis of channels",
                             "save 2D slices as PNG (or NIfTI with a third axis of size 1); split time series "
                             "into one 3D file per time point", code="unsupported_dimensionality")


def _truncated(path: Path, exc: Exception) -> ImageReadError:
    return ImageReadError(path, f"the file is truncated or corrupt ({type(exc).__name__}: {exc})",
                          "download or copy the file again and check its size")


def _read_nifti1_bytes(path: Path) -> tuple[np.ndarray, Geometry] | None:
    """Fast path for plain single-file NIfTI-1: the voxels decompressed straight into their array, no copy.

    nibabel's image loader validates and repairs every header field in Python, which costs more than decoding a
    small volume; the header parser, the array layout (Fortran order, ``vox_offset``) and the scaling
    (``scl_slope``/``scl_inter``) used here are nibabel's own. The file is read as a stream: the voxels go from the
    decompressor into the array they stay in, so the memory peak is the volume itself (bench/inspect.md), and never
    more than the header declares is decompressed (a bomb stops there). Returns ``None`` for anything unusual
    (NIfTI-2, a header that does not parse), which then goes through nibabel's full loader and its error messages.
    """
    import gzip
    import io as _io

    import nibabel as nib
    from nibabel.volumeutils import apply_read_scaling

    try:
        with open(path, "rb") as file:
            compressed = file.read(2) == b"\x1f\x8b"
            file.seek(0)
            stream = gzip.GzipFile(fileobj=file, mode="rb") if compressed else file
            head = stream.read(_NIFTI1_HEADER_SIZE)
            if len(head) < _NIFTI1_HEADER_SIZE or head[344:348] != b"n+1\x00":
                return None
            try:
                header = nib.Nifti1Header.from_fileobj(_io.BytesIO(head), check=False)
                shape = tuple(int(s) for s in header.get_data_shape())
                dtype = header.get_data_dtype()
                offset = int(header.get_data_offset())
                affine = header.get_best_affine()
            except Exception:  # noqa: BLE001 -- an odd header: nibabel's full loader explains what is wrong
                return None
            _refuse_dimensionality(path, shape)
            _refuse_if_too_large(path, shape, 1, dtype)
            stream.read(max(offset - _NIFTI1_HEADER_SIZE, 0))  # header extensions, up to the voxels
            data = np.empty(shape, dtype=dtype, order="F")  # NIfTI stores the first axis fastest
            target = data.reshape(-1, order="F").data.cast("B")  # the array's own bytes
            filled = 0
            while filled < len(target):  # in chunks: gzip's readinto decompresses into a temporary of the size asked
                n = stream.readinto(target[filled:filled + _READ_CHUNK])
                if not n:
                    raise EOFError(f"{filled:,} of the {len(target):,} bytes of voxels the header declares")
                filled += n
    except (EOFError, OSError, zlib.error) as exc:
        raise _truncated(path, exc) from None
    slope, inter = header.get_slope_inter()
    return apply_read_scaling(data, slope, inter), _geometry_from_header(header, affine)


def _read_nifti(path: Path) -> Image:
    fast = _read_nifti1_bytes(path)
    if fast is not None:
        data, geometry = fast
    else:

        try:
            img = load_nifti(path)
        except Exception as exc:  # noqa: BLE001 -- nibabel raises several types for bad headers
            raise ImageReadError(path, f"not a readable NIfTI file ({exc})",
                                 "re-export the file as NIfTI (.nii.gz), e.g. from 3D Slicer or with nibabel") from None
        _refuse_dimensionality(path, tuple(int(s) for s in img.shape))
        geometry = _geometry_from_header(img.header, img.affine)
        _refuse_if_too_large(path, geometry.shape, geometry.n_channels, geometry.dtype)
        try:
            data = np.asanyarray(img.dataobj)
        except (EOFError, OSError, zlib.error, ValueError) as exc:
            raise _truncated(path, exc) from None
    if data.ndim == 4:
        data = np.moveaxis(data, 3, 0)  # MSD multi-modal: channels in the 4th axis
    else:
        data = data[None]
    return Image(data, geometry)


# --------------------------------------------------------------------------------------------------- 2D images

_GREY_MODES = {"L", "P", "1", "I", "I;16", "I;16B", "I;16L", "F"}


def _open_pil(path: Path):
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        pil = PILImage.open(path)
    except PILImage.DecompressionBombError as exc:  # Pillow's own limit (MAX_IMAGE_PIXELS x 2), hit at opening
        raise ImageReadError(path, f"it declares more pixels than Pillow opens ({exc}); a file this size holding "
                             "such an image is a decompression bomb", "if the image is real, tile it into smaller "
                             "images", code="image_too_large") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageReadError(path, f"not a readable image ({exc})", "re-save the file as PNG") from None
    n_frames = getattr(pil, "n_frames", 1)
    if n_frames > 1:
        raise ImageReadError(path, f"multi-page image with {n_frames} pages that is not a grey 3D TIFF stack "
                             "(colour pages, or pages of different sizes)",
                             "save each page as its own PNG, or the volume as one grey stack (or NIfTI)")
    return pil


def _pil_channels(mode: str) -> tuple[int, tuple[str, ...]]:
    if mode in _GREY_MODES:
        return 1, ()
    if mode == "LA":
        return 1, ("alpha channel dropped (grey + alpha image read as grey)",)
    if mode == "RGBA":
        return 3, ("alpha channel dropped (RGBA image read as RGB)",)
    return 3, ()


def _image2d_geometry(path: Path, spacing: tuple[float, ...] | None = None, pil=None) -> Geometry:
    pil = pil if pil is not None else _open_pil(path)
    n_channels, notes = _pil_channels(pil.mode)
    width, height = pil.size
    dtype = {"1": "bool", "L": "uint8", "P": "uint8", "I": "int32", "F": "float32"}.get(pil.mode, "uint8")
    if pil.mode.startswith("I;16"):
        dtype = "uint16"
    return Geometry((height, width), n_channels, tuple(spacing or (1.0, 1.0)), None, dtype, notes)


def _read_image2d(path: Path, spacing: tuple[float, ...] | None = None) -> Image:
    pil = _open_pil(path)
    geometry = _image2d_geometry(path, spacing, pil)
    _refuse_if_too_large(path, geometry.shape, geometry.n_channels, geometry.dtype)
    try:
        if pil.mode in _GREY_MODES:
            data = np.asarray(pil)  # palette images keep their indices: that is what a label PNG means
        elif pil.mode == "LA":
            data = np.asarray(pil.convert("L"))
        else:
            data = np.asarray(pil.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(path, f"the file is truncated or corrupt ({exc})",
                             "copy or export the image again") from None
    if data.dtype == bool:
        data = data.astype(np.uint8)
    data = data[None] if data.ndim == 2 else np.moveaxis(data, 2, 0)
    return Image(data, geometry, geometry.notes)


# --------------------------------------------------------------------------------------------------- NRRD, MHA/MHD


def import_simpleitk():
    """The SimpleITK module (NRRD, MetaImage and DICOM go through it), or a TutorsegError saying to install it."""
    try:
        import SimpleITK
    except ImportError:
        raise TutorsegError("reading NRRD, MHA/MHD and DICOM needs SimpleITK, which is not installed: "
                            "pip install SimpleITK (a dependency of tutorseg: reinstall tutorseg)") from None
    return SimpleITK


def itk_affine(spacing, origin, direction) -> np.ndarray:
    """The RAS voxel-to-world affine of an ITK image (spacing, origin and direction in ITK's LPS world).

    >>> itk_affine((0.5, 0.5, 2.0), (10.0, 20.0, 30.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    array([[ -0.5,   0. ,   0. , -10. ],
           [  0. ,  -0.5,   0. , -20. ],
           [  0. ,   0. ,   2. ,  30. ],
           [  0. ,   0. ,   0. ,   1. ]])
    """
    n = len(spacing)
    affine = np.eye(4)
    rotation = np.asarray(direction, dtype=np.float64).reshape(n, n) * np.asarray(spacing, dtype=np.float64)
    affine[:n, :n] = LPS_TO_RAS[:n, :n] @ rotation
    affine[:n, 3] = LPS_TO_RAS[:n, :n] @ np.asarray(origin, dtype=np.float64)
    return affine


def itk_geometry_of(affine: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """``(spacing, origin, direction)`` in ITK's LPS world for a RAS affine: the inverse of :func:`itk_affine`."""
    to_lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)[:3]  # LPS_TO_RAS is its own inverse
    spacing = np.linalg.norm(to_lps[:, :3], axis=0)
    direction = to_lps[:, :3] / spacing
    return tuple(map(float, spacing)), tuple(map(float, to_lps[:, 3])), tuple(map(float, direction.ravel()))


def _itk_reader(path: Path):
    _refuse_data_files_outside(path)
    sitk = import_simpleitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ImageReadError(path, f"not a readable {file_ending(path)} file ({str(exc).strip().splitlines()[-1]})",
                             "export it again (3D Slicer: Save, MITK: Save Image), or as NIfTI (.nii.gz)") from None
    dimension = reader.GetDimension()
    if dimension != 3:
        raise ImageReadError(path, f"{dimension}D image; tutorseg reads {file_ending(path)} files as 3D volumes",
                             "save 2D images as PNG; split a 4D series into one 3D file per time point",
                             code="unsupported_dimensionality")
    return reader


def _itk_geometry(path: Path, reader=None) -> Geometry:
    reader = reader or _itk_reader(path)
    shape = tuple(int(s) for s in reader.GetSize())  # ITK's size is (x, y, z), tutorseg's order
    spacing = tuple(float(s) for s in reader.GetSpacing())
    affine = itk_affine(spacing, reader.GetOrigin(), reader.GetDirection())
    dtype = import_simpleitk().GetPixelIDValueAsString(reader.GetPixelID())
    numpy_dtype = {"8-bit unsigned integer": "uint8", "8-bit signed integer": "int8",
                   "16-bit unsigned integer": "uint16",
                   "16-bit signed integer": "int16", "32-bit unsigned integer": "uint32",
                   "32-bit signed integer": "int32", "64-bit unsigned integer": "uint64",
                   "64-bit signed integer": "int64", "32-bit float": "float32", "64-bit float": "float64"}
    n_channels = int(reader.GetNumberOfComponents())
    base = dtype.replace("vector of ", "")
    return Geometry(shape, n_channels, spacing, affine, numpy_dtype.get(base, base))


def _read_itk(path: Path) -> Image:
    sitk = import_simpleitk()
    reader = _itk_reader(path)
    geometry = _itk_geometry(path, reader)
    _refuse_if_too_large(path, geometry.shape, geometry.n_channels, geometry.dtype)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise _truncated(path, RuntimeError(str(exc).strip().splitlines()[-1])) from None
    array = sitk.GetArrayFromImage(image)  # (z, y, x) or (z, y, x, components)
    if array.ndim == 3:
        array = array[..., None]
    return Image(np.ascontiguousarray(np.transpose(array, (3, 2, 1, 0))), geometry)  # (C, x, y, z)


def _write_itk(segmentation: np.ndarray, target: Path, reference: Path) -> None:
    """Write a label map with the reference's geometry: an ITK file's own, or a NIfTI's affine converted to LPS."""
    sitk = import_simpleitk()
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(segmentation)))  # (x, y, z) -> ITK's (z, y, x)
    if file_ending(reference) in ITK_ENDINGS:
        info = _itk_reader(reference)
        spacing, origin, direction = info.GetSpacing(), info.GetOrigin(), info.GetDirection()
    else:
        affine = read_geometry(reference).affine
        if affine is None:
            raise ValueError(f"{reference.name} has no 3D geometry to give {target.name}")
        spacing, origin, direction = itk_geometry_of(affine)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(target), True)  # compressed


# --------------------------------------------------------------------------------------------------- 3D TIFF

MISSING_SPACING_NOTE = "no spacing in the file or beside it: 1 per axis assumed"


def spacing_sidecar(path: str | os.PathLike) -> Path:
    """The sidecar JSON of a TIFF stack, nnU-Net's convention: ``CASE_0000.tif`` -> ``CASE_0000.json``."""
    path = Path(path)
    return path.with_name(path.name[: -len(file_ending(path))] + ".json")


def _tiff_spacing(path: Path, tif) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """``(x, y, z)`` spacing from the sidecar JSON, else the ImageJ tags, else ones with a note saying so."""
    import json

    sidecar = spacing_sidecar(path)
    if sidecar.is_file():
        try:
            zyx = json.loads(sidecar.read_text(encoding="utf-8"))["spacing"]
            spacing = tuple(float(v) for v in reversed(zyx))
        except (ValueError, KeyError, TypeError) as exc:
            raise ImageReadError(sidecar, f"not a spacing file ({exc})",
                                 'write {"spacing": [z, y, x]} (three positive numbers) into it') from None
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ImageReadError(sidecar, f"spacing {list(reversed(spacing))} is not three positive numbers [z, y, x]",
                                 'write {"spacing": [z, y, x]}, e.g. {"spacing": [2.0, 0.5, 0.5]}')
        return spacing, ()
    imagej = tif.imagej_metadata or {}
    page = tif.pages[0]
    x_res, y_res = (page.tags.get(name) for name in ("XResolution", "YResolution"))
    if imagej.get("spacing") and x_res is not None and y_res is not None:
        per_unit = [r.value[0] / r.value[1] for r in (x_res, y_res)]  # pixels per unit
        if min(per_unit) > 0:
            return (1.0 / per_unit[0], 1.0 / per_unit[1], float(imagej["spacing"])), ()
    return (1.0, 1.0, 1.0), (MISSING_SPACING_NOTE,)


def _tiff3d_geometry(path: Path) -> Geometry:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            spacing, notes = _tiff_spacing(path, tif)
            shape, dtype = tuple(int(s) for s in series.shape), str(series.dtype)
    except (tifffile.TiffFileError, OSError, IndexError) as exc:
        raise ImageReadError(path, f"not a readable TIFF stack ({exc})", "save the stack again") from None
    n_channels = shape[3] if len(shape) == 4 else 1
    if len(shape) not in (3, 4):
        raise ImageReadError(path, f"TIFF series of shape {shape}; tutorseg reads stacks of (z, y, x[, channels])",
                             "save one 3D stack per channel, time point and case", code="unsupported_dimensionality")
    xyz = (shape[2], shape[1], shape[0])
    return Geometry(xyz, n_channels, spacing, np.diag([*spacing, 1.0]), dtype, notes)


def _read_tiff3d(path: Path) -> Image:
    import tifffile

    geometry = _tiff3d_geometry(path)
    _refuse_if_too_large(path, geometry.shape, geometry.n_channels, geometry.dtype)
    try:
        array = tifffile.imread(path)  # (z, y, x) or (z, y, x, channels)
    except (tifffile.TiffFileError, OSError, ValueError) as exc:
        raise _truncated(path, exc) from None
    if array.ndim == 3:
        array = array[..., None]
    return Image(np.ascontiguousarray(np.transpose(array, (3, 2, 1, 0))), geometry, geometry.notes)


def _write_tiff3d(segmentation: np.ndarray, out_path: Path, reference: Path) -> None:
    """A label stack ``(z, y, x)``, and beside it the reference's spacing as its sidecar JSON; each file atomic."""
    import json

    import tifffile

    spacing = read_geometry(reference).spacing
    with atomic_path(spacing_sidecar(out_path)) as tmp:
        tmp.write_text(json.dumps({"spacing": [float(v) for v in reversed(spacing)]}), encoding="utf-8")
    with atomic_path(out_path) as tmp:
        tifffile.imwrite(tmp, np.ascontiguousarray(np.transpose(segmentation)), compression="zlib")


# --------------------------------------------------------------------------------------------------- public API


# what _readable_format names -> the header reader and the voxel reader (2D images take a spacing, handled apart)
_GEOMETRY_READERS = {"nifti": _nifti_geometry, "itk": _itk_geometry, "tiff3d": _tiff3d_geometry}
_IMAGE_READERS = {"nifti": _read_nifti, "itk": _read_itk, "tiff3d": _read_tiff3d}


def _readable_format(path: Path) -> str:
    """``"nifti"``, ``"itk"`` or ``"2d"`` for a file tutorseg can read; else an :class:`ImageReadError`."""
    if not path.is_file():
        raise ImageReadError(path, "file not found", "check the file name and the dataset folder")
    ending = file_ending(path)
    if ending in NIFTI_ENDINGS:
        return "nifti"
    if ending in ITK_ENDINGS:
        return "itk"
    if ending in TIFF_ENDINGS and is_tiff_stack(path):
        return "tiff3d"
    if ending in IMAGE_2D_ENDINGS:
        return "2d"
    raise ImageReadError(path, f"unsupported file type '{path.name}'",
                         f"tutorseg reads {', '.join(SUPPORTED_ENDINGS)}; convert the file to one of these",
                         code="unsupported_format")


def read_geometry(path: str | os.PathLike, *, spacing_2d: tuple[float, ...] | None = None) -> Geometry:
    """Read a file's geometry from its header only (fast: no voxel data is decoded).

    Raises:
        ImageReadError: the file is missing, of an unsupported type, or its header is unreadable.
    """
    path = Path(path)
    kind = _readable_format(path)
    return _image2d_geometry(path, spacing_2d) if kind == "2d" else _GEOMETRY_READERS[kind](path)


def read_image(path: str | os.PathLike, *, spacing_2d: tuple[float, ...] | None = None) -> Image:
    """Read a file's voxels, channel first: ``(C, *spatial)``, in the stored dtype.

    Raises:
        ImageReadError: the file is missing, unsupported, truncated or corrupt.
    """
    path = Path(path)
    kind = _readable_format(path)
    return _read_image2d(path, spacing_2d) if kind == "2d" else _IMAGE_READERS[kind](path)


def write_segmentation(segmentation: np.ndarray, out_path: str | os.PathLike,
                       reference: str | os.PathLike | None = None) -> Path:
    """Write a label map atomically, in the format of ``out_path``'s ending.

    The geometry is the ``reference``'s (the input image), so the result opens aligned with its image in 3D Slicer,
    ITK-SNAP or MITK, whatever the two formats: a NIfTI reference lends its header (or, for NRRD/MHA output, its
    affine), an NRRD/MHA reference its spacing, origin and direction (or, for NIfTI output, the affine made from
    them). For PNG the labels are stored as 8-bit integers.

    Args:
        segmentation: ``(*spatial)`` integer label map in tutorseg's axis order.
        out_path: where to write (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``, ``.mhd`` or ``.png``).
        reference: the image the segmentation belongs to (required for 3D output).
    """
    out_path = Path(out_path)
    ending = file_ending(out_path)
    if ending not in SUPPORTED_ENDINGS:
        raise ValueError(f"unsupported output file type: {out_path.name}")
    segmentation = np.asarray(segmentation)
    labels = segmentation.astype(_label_dtype(segmentation))
    if ending in TIFF_ENDINGS and labels.ndim == 3:  # a label stack for a 3D TIFF image
        if reference is None:
            raise ValueError("writing a TIFF stack needs the reference image whose spacing to copy")
        _write_tiff3d(labels, out_path, Path(reference))
        return out_path
    if ending in IMAGE_2D_ENDINGS:
        from PIL import Image as PILImage

        largest = int(segmentation.max(initial=0))
        if largest > 65535 or (largest > 255 and ending != ".png"):
            raise ValueError(f"{ending} label maps hold values up to {65535 if ending == '.png' else 255}, not "
                             f"{largest}")
        # 8-bit as nnU-Net writes them; 16-bit PNG where values exceed 255 (instance maps of many objects)
        pixels = labels.astype(np.uint8 if largest <= 255 else np.uint16)
        with atomic_path(out_path) as tmp:
            PILImage.fromarray(pixels).save(tmp, format="PNG" if ending == ".png" else "TIFF")
        return out_path
    if reference is None:
        raise ValueError(f"writing {ending} needs the reference image whose geometry to copy")
    reference = Path(reference)
    if ending == ".mhd":  # a header beside a raw file: two files, written by ITK itself, not one atomic file
        _write_itk(labels, out_path, reference)
        return out_path
    with atomic_path(out_path) as tmp:
        if ending in ITK_ENDINGS:  # the temporary file keeps the ending, by which ITK picks its writer
            _write_itk(labels, tmp, reference)
        elif file_ending(reference) in ITK_ENDINGS:  # NIfTI from an NRRD/MHA image: its affine
            import nibabel as nib

            affine = read_geometry(reference).affine
            image = nib.Nifti1Image(labels, affine)
            image.set_qform(affine, code=1)  # scanner coordinates, as ITK's NIfTI writer marks them
            image.set_sform(affine, code=1)
            nib.save(image, str(tmp))
        else:  # NIfTI from a NIfTI image: its header
            import nibabel as nib

            ref = load_nifti(reference)
            header = ref.header.copy()
            header.set_data_dtype(labels.dtype)
            header.set_slope_inter(1, 0)
            if len(header.get_data_shape()) != labels.ndim:  # a 4D multi-channel reference: drop the channel axis
                header.set_data_shape(labels.shape)
            nib.save(type(ref)(labels, ref.affine, header), str(tmp))
    return out_path
    with atomic_path(out_path) as tmp:
        if ending in ITK_ENDINGS:  # the temporary file keeps the ending, by which ITK picks its writer
            _write_itk(segmentation.astype(_label_dtype(segmentation)), tmp, Path(reference), None)
        elif ending in NIFTI_ENDINGS and file_ending(reference) in ITK_ENDINGS:
            import nibabel as nib

            affine = read_geometry(reference).affine
            image = nib.Nifti1Image(segmentation.astype(_label_dtype(segmentation)), affine)
            image.set_qform(affine, code=1)  # scanner coordinates, as ITK's NIfTI writer marks them
            image.set_sform(affine, code=1)
            nib.save(image, str(tmp))
        elif ending in NIFTI_ENDINGS:
            import nibabel as nib

            ref = load_nifti(reference)
            header = ref.header.copy()
            data = segmentation.astype(_label_dtype(segmentation))
            header.set_data_dtype(data.dtype)
            header.set_slope_inter(1, 0)
            if len(header.get_data_shape()) != data.ndim:  # a 4D multi-channel reference: drop the channel axis
                header.set_data_shape(data.shape)
            nib.save(type(ref)(data, ref.affine, header), str(tmp))
        else:
            from PIL import Image as PILImage

            if segmentation.max(initial=0) > 255:
                raise ValueError("PNG label maps hold at most 256 classes")
            PILImage.fromarray(segmentation.astype(np.uint8)).save(tmp, format="PNG" if ending == ".png" else "TIFF")
    return out_path


def _label_dtype(segmentation: np.ndarray) -> np.dtype:
    """uint8 for up to 256 classes, int16 beyond."""
    return np.dtype(np.uint8 if segmentation.max(initial=0) < 256 else np.int16)


def write_probabilities(path: Path, probabilities: np.ndarray, names: Sequence[str]) -> None:
    """Write ``CASE.npz``: ``probabilities`` (K, *spatial) float16 and the channels' names (``classes``), atomically.

    ``names``: one per channel, in order (the classes, background first; or the regions).
    """
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, probabilities=probabilities.astype(np.float16), classes=np.array(list(names)))
