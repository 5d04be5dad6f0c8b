"""Preprocessing: crop, normalise and resample every case as the plan says, and store the result for training.

nnU-Net's ``DefaultPreprocessor.run_case_npy``, step by step (``docs/preprocessing.md``; notebook 03):

1. **Crop to the non-zero region**: the bounding box of the voxels that are non-zero in any channel (holes
   filled). Outside this region the label map gets ``-1`` where it was background, so that statistics and the
   loss can tell "outside the scan" from "background inside the scan" (nnU-Net's ``crop_to_nonzero``).
2. **Normalise each channel** by the plan's scheme, before resampling as nnU-Net does: Z-score (over the
   non-zero region when ``use_mask_for_norm``), CT (clip to the dataset's foreground 0.5/99.5 percentiles, then
   the dataset's foreground mean and std), none, rescale to 0-1, or RGB / 255.
3. **Resample** image and label to the configuration's target spacing (:mod:`tutorseg.preprocessing.resampling`).
4. **Sample foreground locations** per class, for the patch sampler's oversampling.

Storage, in ``out_dir/<configuration>/`` (a few files per case, fine on Google Drive)::

    CASE.b2nd            data (C, *S) float32, compressed in chunks (:mod:`tutorseg.preprocessing.storage`)
    CASE_seg.b2nd        label (1, *S) int8/int16, the same way
    CASE_locations.npz   locations_<class> (N, ndim) int32: foreground voxels for oversampling
    CASE.json            the case's properties, its files' signature and the settings hash; written last, so a
                         case with its CASE.json is finished (a killed run continues with the others)
    properties.json      per case: original shape, spacing, affine, crop box, shapes after crop/resampling...
    preprocessed.json    what was preprocessed with what: a hash of the plan's preprocessing settings and each
                         case's file sizes and modification times; a second call with the same inputs does nothing

Cases are processed one per worker process, so memory holds at most one case per worker; the number of workers
is bounded by the memory available (:func:`preprocessing_workers`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from tutorseg.data.artefacts import to_json_types
from tutorseg.data.cropping import crop_to_nonzero
from tutorseg.data.dataset import Case, Dataset, as_dataset
from tutorseg.data.files import write_json_atomic
from tutorseg.data.jobs import default_workers, run_per_case, with_progress
from tutorseg.data.problems import TutorsegError
from tutorseg.preprocessing import storage
from tutorseg.preprocessing.resampling import compute_new_shape, resample_image, resample_label, separate_z_axis

if TYPE_CHECKING:
    from tutorseg.planning import ConfigurationPlan, Plan

FORMAT_VERSION = 2  # bump when the stored format or the processing changes: old folders are then redone
# (2: Blosc2 chunked arrays, one CASE.json per case; 1: one uncompressed .npz per case)
N_LOCATIONS = 10_000  # nnU-Net's _sample_foreground_locations: at most 10,000 voxels per class ...
MIN_LOCATION_COVERAGE = 0.01  # ... but at least 1% of the class's voxels
PREPROCESSING_PEAK_FACTOR = 10  # a worker's peak memory / the case's float32 image: 9.7 measured (bench/storage.md)
LOCATION_SEED = 1234  # nnU-Net's seed for that sampling (deterministic per case)
NORMALIZATION_SCHEMES = ("ZScoreNormalization", "CTNormalization", "NoNormalization", "RescaleTo01Normalization",
                         "RGBTo01Normalization")


class PreprocessingError(TutorsegError):
    """A case or a plan cannot be preprocessed; the message names the case and what to change."""


# --------------------------------------------------------------------------------------------------- artefacts


@dataclass(frozen=True)
class CaseProperties:
    """What preprocessing did to one case: everything needed to map a prediction back onto the original image.

    Attributes:
        case_id: the case.
        original_shape: spatial shape of the raw image (tutorseg axis order).
        original_spacing: its spacing.
        affine: 4x4 voxel-to-world matrix of a NIfTI image (list of lists), ``None`` for 2D images.
        crop_bbox: ``[[start, stop], ...]`` per axis: the non-zero bounding box in the raw image.
        shape_after_crop: spatial shape after cropping.
        target_spacing: the spacing resampled to (for ``2d`` on 3D data the slice axis keeps the case's own).
        shape_after_resampling: spatial shape of the stored arrays.
        separate_z_axis: the axis resampled separately (anisotropic data), or ``None``.
        normalization: per channel, the scheme and the numbers used (``{"scheme": ..., "mean": ..., "std": ...}``).
        class_voxels: label value -> voxels of that class after resampling (foreground classes).
    """

    case_id: str
    original_shape: tuple[int, ...]
    original_spacing: tuple[float, ...]
    affine: list | None
    crop_bbox: tuple[tuple[int, int], ...]
    shape_after_crop: tuple[int, ...]
    target_spacing: tuple[float, ...]
    shape_after_resampling: tuple[int, ...]
    separate_z_axis: int | None
    normalization: tuple[dict, ...] = ()
    class_voxels: dict[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["class_voxels"] = {str(k): v for k, v in self.class_voxels.items()}
        return to_json_types(data)

    @classmethod
    def from_dict(cls, data: dict) -> "CaseProperties":
        return cls(
            case_id=data["case_id"], original_shape=tuple(data["original_shape"]),
            original_spacing=tuple(data["original_spacing"]), affine=data.get("affine"),
            crop_bbox=tuple(tuple(b) for b in data["crop_bbox"]), shape_after_crop=tuple(data["shape_after_crop"]),
            target_spacing=tuple(data["target_spacing"]), shape_after_resampling=tuple(data["shape_after_resampling"]),
            separate_z_axis=data.get("separate_z_axis"), normalization=tuple(data.get("normalization", ())),
            class_voxels={int(k): int(v) for k, v in data.get("class_voxels", {}).items()})


@dataclass(frozen=True)
class PreprocessedCase:
    """One preprocessed case (what :class:`tutorseg.training.batches.patch_sampling.PatchSampler` samples from).

    Its arrays are numpy arrays in memory, or stored arrays read from disk a patch at a time
    (:class:`tutorseg.preprocessing.storage.StoredArray`, see :meth:`PreprocessedDataset.load_cases`).

    Attributes:
        case_id: the case.
        data: (C, *S) float32 normalised image at the target spacing.
        label: (*S) int8/int16 label map, -1 outside the non-zero region; ``None`` for an unlabelled image.
        class_locations: class -> (N, ndim) int32 voxel indices of that class (a sample of at most 10,000).
        properties: the case's :class:`CaseProperties`.
        previous: for a cascade's second stage, (*S) int8 the first stage's segmentation on this grid (held in
            memory: one byte per voxel); ``None`` otherwise.
    """

    case_id: str
    data: np.ndarray | storage.StoredArray
    label: np.ndarray | storage.StoredArray | None
    class_locations: Mapping[int, np.ndarray]
    properties: CaseProperties
    previous: np.ndarray | None = None

    @property
    def in_memory(self) -> bool:
        """Its arrays are numpy arrays in memory (not read from disk)."""
        return isinstance(self.data, np.ndarray)

    def loaded(self) -> "PreprocessedCase":
        """This case with its arrays read into memory (itself when they already are)."""
        if self.in_memory:
            return self
        label = None if self.label is None else storage.read_all(self.label)
        return PreprocessedCase(self.case_id, storage.read_all(self.data), label, dict(self.class_locations),
                                self.properties, self.previous)

    def __repr__(self) -> str:
        return (f"PreprocessedCase({self.case_id!r}, data {self.data.shape} {self.data.dtype}, "
                f"spacing {list(self.properties.target_spacing)}, classes {sorted(self.class_locations)})")


@dataclass(frozen=True)
class PreprocessedDataset:
    """A folder of preprocessed cases for one configuration; :meth:`load_cases` opens them for training.

    Attributes:
        folder: ``out_dir/<configuration>``.
        configuration: the configuration's name.
        case_ids: the cases, sorted.
        properties: case id -> :class:`CaseProperties`.
        processed: the cases this call (re)processed; empty when everything was up to date.
        seconds: how long the call took.
        last_memory_decision: why the last :meth:`load_cases` held the cases in memory or not.
    """

    folder: Path
    configuration: str
    case_ids: tuple[str, ...]
    properties: dict[str, CaseProperties]
    processed: tuple[str, ...] = ()
    seconds: float = 0.0
    last_memory_decision: str = ""

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "PreprocessedDataset":
        """Open a folder written by :func:`preprocess` (``out_dir/<configuration>``).

        Raises:
            PreprocessingError: the folder holds no finished preprocessing.
        """
        folder = Path(folder)
        record, props = folder / "preprocessed.json", folder / "properties.json"
        if not record.is_file() or not props.is_file():
            raise PreprocessingError(f"{folder} holds no finished preprocessing (preprocessed.json or "
                                     "properties.json missing); run tutorseg.preprocess(dataset, plan, "
                                     "configuration, out_dir) first")
        meta = json.loads(record.read_text(encoding="utf-8"))
        properties = {k: CaseProperties.from_dict(v)
                      for k, v in json.loads(props.read_text(encoding="utf-8")).items()}
        return cls(folder, meta["configuration"], tuple(sorted(properties)), properties)

    def __len__(self) -> int:
        return len(self.case_ids)

    def load_case(self, case_id: str, *, in_memory: bool = True) -> PreprocessedCase:
        """One case: read into memory, or (``in_memory=False``) opened to be read a patch at a time."""
        if case_id not in self.properties:
            raise KeyError(f"no case {case_id!r} in {self.folder}; cases are e.g. {', '.join(self.case_ids[:3])}")
        data, label, locations = storage.open_case(self.folder, case_id)
        case = PreprocessedCase(case_id, data, label, locations, self.properties[case_id])
        return case.loaded() if in_memory else case

    def load_cases(self, case_ids: Sequence[str] | None = None, *, in_memory: bool | None = None,
                   progress: bool = False) -> list[PreprocessedCase]:
        """The cases (all by default), in the order given, for training.

        Args:
            case_ids: which cases.
            in_memory: read them into memory (fast), or leave them on disk and read patches as they are needed
                (any size of dataset). Default: in memory when they take at most 30 % of the memory available
                (:func:`tutorseg.preprocessing.storage.in_memory_decision`; :attr:`last_memory_decision` says why).
            progress: show a progress bar while reading.
        """
        ids = list(self.case_ids if case_ids is None else case_ids)
        if in_memory is None:
            from tutorseg.data.jobs import available_memory_bytes

            in_memory, reason = storage.in_memory_decision(self.memory_bytes(ids), available_memory_bytes())
        else:
            reason = "held in memory (asked for)" if in_memory else "read from disk a patch at a time (asked for)"
        object.__setattr__(self, "last_memory_decision", reason)
        return [self.load_case(c, in_memory=in_memory)
                for c in with_progress(ids, enabled=progress and in_memory, description="loading", leave=False)]

    def memory_bytes(self, case_ids: Sequence[str] | None = None) -> int:
        """Bytes the cases take in memory, decompressed (from the stored arrays' shapes: nothing is read)."""
        total = 0
        for case_id in self.case_ids if case_ids is None else case_ids:
            data, label, _ = storage.open_case(self.folder, case_id)
            total += storage.memory_bytes(data, label)
        return total

    @property
    def nbytes(self) -> int:
        """Bytes on disk of the cases' arrays (compressed)."""
        return sum(storage.stored_bytes(self.folder, c) for c in self.case_ids)

    def __repr__(self) -> str:
        state = f"{len(self.processed)} processed now" if self.processed else "up to date"
        return (f"PreprocessedDataset({self.configuration}: {len(self)} cases in {self.folder.name}/, {state}, "
                f"{self.nbytes / 1e6:.1f} MB)")

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{p.case_id}</td><td>{list(p.original_shape)}</td><td>{list(p.original_spacing)}</td>"
            f"<td>{list(p.shape_after_crop)}</td><td>{list(p.shape_after_resampling)}</td>"
            f"<td>{list(p.target_spacing)}</td></tr>"
            for p in list(self.properties.values())[:10])
        more = f"<p>... and {len(self) - 10} more cases</p>" if len(self) > 10 else ""
        return (f"<b>Preprocessed {self.configuration}</b>: {len(self)} cases, {self.nbytes / 1e6:.1f} MB"
                "<table><tr><th>case</th><th>original shape</th><th>spacing</th><th>after crop</th>"
                f"<th>after resampling</th><th>target spacing</th></tr>{rows}</table>{more}")


# --------------------------------------------------------------------------------------------------- steps


def normalize_channel(channel: np.ndarray, scheme: str, *, inside: np.ndarray | None = None,
                      intensity_properties: dict | None = None) -> tuple[np.ndarray, dict]:
    """Normalise one channel by an nnU-Net scheme (``nnunetv2/preprocessing/normalization``).

    Args:
        channel: (*S) intensities.
        scheme: one of :data:`NORMALIZATION_SCHEMES`.
        inside: (*S) bool: statistics and changes only inside (Z-score with ``use_mask_for_norm``).
        intensity_properties: the fingerprint's foreground statistics of this channel (CT scheme).

    Returns:
        (*S) float32 normalised channel, and the numbers used.
    """
    channel = channel.astype(np.float32, copy=True)
    if inside is not None and not inside.any():
        inside = None  # an empty mask (an all-zero image): fall back to the whole channel
    if scheme == "ZScoreNormalization":
        values = channel[inside] if inside is not None else channel
        mean, std = float(values.mean()), float(values.std())
        if inside is not None:
            channel[inside] = (channel[inside] - mean) / max(std, 1e-8)
        else:
            channel = (channel - mean) / max(std, 1e-8)
        return channel, {"scheme": scheme, "mean": mean, "std": std, "masked": inside is not None}
    if scheme == "CTNormalization":
        if not intensity_properties:
            raise PreprocessingError("CT normalisation needs the fingerprint's foreground intensity statistics; "
                                     "the plan has none for this channel: make the plan from a fingerprint")
        low, high = intensity_properties["percentile_00_5"], intensity_properties["percentile_99_5"]
        mean, std = intensity_properties["mean"], intensity_properties["std"]
        channel = (np.clip(channel, low, high) - mean) / max(std, 1e-8)
        return channel, {"scheme": scheme, "clip": [low, high], "mean": mean, "std": std}
    if scheme == "NoNormalization":
        return channel, {"scheme": scheme}
    if scheme == "RescaleTo01Normalization":
        low = float(channel.min())
        high = float(channel.max())
        return (channel - low) / max(high - low, 1e-8), {"scheme": scheme, "min": low, "max": high}
    if scheme == "RGBTo01Normalization":
        if channel.min() < 0 or channel.max() > 255:
            raise PreprocessingError(f"RGBTo01Normalization expects 0..255 values, found {channel.min()}.."
                                     f"{channel.max()}; use ZScoreNormalization for this channel")
        return channel / 255.0, {"scheme": scheme}
    raise PreprocessingError(f"unknown normalisation scheme {scheme!r}; expected one of "
                             f"{', '.join(NORMALIZATION_SCHEMES)}")


def normalize(image: np.ndarray, label: np.ndarray, plan, configuration) -> tuple[np.ndarray, tuple[dict, ...]]:
    """Normalise every channel of a cropped image by the configuration's schemes: (C, *S) float32."""
    schemes = configuration.normalization_schemes
    if len(schemes) != image.shape[0]:
        raise PreprocessingError(f"the image has {image.shape[0]} channels but configuration {configuration.name} "
                                 f"normalises {len(schemes)}; plan with this dataset")
    out, used = np.empty(image.shape, dtype=np.float32), []
    for c, scheme in enumerate(schemes):
        inside = (label >= 0) if configuration.use_mask_for_norm[c] else None
        props = plan.foreground_intensity_properties_per_channel.get(str(c))
        out[c], numbers = normalize_channel(image[c], scheme, inside=inside, intensity_properties=props)
        used.append(numbers)
    return out, tuple(used)


ANNOTATED = -1  # class_locations key of the annotated voxels, where an ignore label leaves the rest unannotated


def sample_class_locations(label: np.ndarray, classes: Sequence[int] | Mapping[int, Sequence[int]], *,
                           seed: int = LOCATION_SEED, ignore: int | None = None) -> dict[int, np.ndarray]:
    """Up to 10,000 voxel indices per class (at least 1% of its voxels), for foreground oversampling.

    nnU-Net's ``_sample_foreground_locations`` with the same numbers; indices are spatial (no channel index). With an
    ignore label also those of the annotated voxels (every label but the ignore label), under the key
    :data:`ANNOTATED`: with sparse annotations nnU-Net centres even the patches it does not force to foreground on
    annotated voxels (its ``annotated_classes_key``), or most patches would hold nothing to learn from.

    ``classes`` are label values, or for region-based labels key -> the values of a region
    (:attr:`~tutorseg.planning.Plan.sampling_targets`): nnU-Net then samples the voxels of each region.
    """
    rng = np.random.default_rng(seed)
    locations = {}
    targets = classes if isinstance(classes, Mapping) else {int(value): (int(value),) for value in classes}
    regions = {int(key): np.isin(label, list(values)) for key, values in targets.items()}
    if ignore is not None:
        regions[ANNOTATED] = label != ignore
    for value, region in regions.items():
        where = np.argwhere(region)
        if len(where) == 0:
            locations[int(value)] = np.zeros((0, label.ndim), dtype=np.int32)
            continue
        n = max(min(N_LOCATIONS, len(where)), int(np.ceil(len(where) * MIN_LOCATION_COVERAGE)))
        chosen = rng.choice(len(where), n, replace=False)
        locations[int(value)] = where[np.sort(chosen)].astype(np.int32)
    return locations


def _configuration(plan, configuration):
    if isinstance(configuration, str):
        return plan[configuration]
    return configuration


def preprocess_image(image: np.ndarray, spacing: Sequence[float], plan, configuration, label: np.ndarray | None = None,
                     *, case_id: str = "image", affine=None
                     ) -> tuple[np.ndarray, np.ndarray | None, CaseProperties]:
    """Crop, normalise and resample one image as preprocessing does (used for prediction).

    Args:
        image: (C, *S) raw image.
        spacing: its spacing (tutorseg axis order).
        plan: the :class:`tutorseg.planning.Plan`.
        configuration: a configuration name (``"3d_fullres"``) or its :class:`ConfigurationPlan`.
        label: (*S) integer label map, or ``None``.
        case_id: the case, for error messages and its properties.
        affine: the image's voxel-to-world matrix, kept in the properties to write predictions aligned.

    Returns:
        data (C, *S2) float32, label (*S2) int8/int16 (or ``None``), and the case's :class:`CaseProperties`.
    """
    config = _configuration(plan, configuration)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != image.ndim - 1:
        raise PreprocessingError(f"{case_id}: spacing {spacing} does not match the image's {image.ndim - 1} axes")
    cropped, cropped_label, box = crop_to_nonzero(image, label)
    data, used = normalize(cropped, cropped_label, plan, config)
    target = config.target_spacing_for_case(spacing) if hasattr(config, "target_spacing_for_case") \
        else tuple(config.spacing)
    if len(target) != len(spacing):
        raise PreprocessingError(f"{case_id}: configuration {config.name} resamples {len(target)} axes but the image "
                                 f"has {len(spacing)}; was the plan made for this dataset?")
    new_shape = compute_new_shape(cropped.shape[1:], spacing, target)
    orders = dict(order_z=config.resampling_order_z, separate_z=config.separate_z,
                  anisotropy_threshold=plan.anisotropy_threshold)
    data = resample_image(data, spacing, target, order=config.resampling_order_data, **orders)
    out_label = resample_label(cropped_label, spacing, target, order=config.resampling_order_seg, **orders)
    out_label = out_label.astype(np.int8 if out_label.max(initial=0) <= 127 else np.int16)
    counts = ({v: int((out_label == v).sum()) for v in plan.class_labels.values() if v != 0}
              if label is not None else {})
    properties = CaseProperties(
        case_id=case_id, original_shape=tuple(int(s) for s in image.shape[1:]), original_spacing=spacing,
        affine=None if affine is None else np.asarray(affine, dtype=float).tolist(), crop_bbox=box,
        shape_after_crop=tuple(int(s) for s in cropped.shape[1:]), target_spacing=tuple(target),
        shape_after_resampling=tuple(int(s) for s in new_shape),
        separate_z_axis=separate_z_axis(spacing, target, config.separate_z, plan.anisotropy_threshold),
        normalization=used,
        class_voxels=counts)
    return data, (out_label if label is not None else None), properties


def label_on_grid(label: np.ndarray, properties: CaseProperties, plan, configuration) -> np.ndarray:
    """A label map of the raw image (e.g. another model's segmentation) on a preprocessed case's grid.

    Cropped to the case's non-zero box and resampled as preprocessing resamples labels; used for the cascade's
    first-stage segmentation, in training and in prediction alike.

    Returns:
        (*shape_after_resampling) int8/int16 label map (background 0 everywhere outside the labels).
    """
    config = _configuration(plan, configuration)
    box = tuple(slice(a, b) for a, b in properties.crop_bbox)
    cropped = np.asarray(label)[box].astype(np.int16, copy=False)
    orders = dict(order_z=config.resampling_order_z, separate_z=config.separate_z,
                  anisotropy_threshold=plan.anisotropy_threshold)
    out = resample_label(cropped, properties.original_spacing, properties.target_spacing,
                         order=config.resampling_order_seg, **orders)
    if tuple(out.shape) != tuple(properties.shape_after_resampling):
        raise PreprocessingError(f"{properties.case_id}: a label map of shape {label.shape} resampled to "
                                 f"{out.shape}, the case's grid is {properties.shape_after_resampling}; is it a "
                                 "segmentation of this image?")
    return out.astype(np.int8 if out.max(initial=0) <= 127 else np.int16)


def undo_preprocessing(prediction: np.ndarray, properties: CaseProperties, plan, configuration) -> np.ndarray:
    """Map a prediction on the preprocessed grid back onto the original image (resample back, then un-crop).

    Args:
        prediction: (K, *S2) class probabilities, or (*S2) integer label map, on the preprocessed grid.
        properties: the case's :class:`CaseProperties` (from :func:`preprocess_image` or the preprocessed folder).
        plan: the :class:`tutorseg.planning.Plan`.
        configuration: as for :func:`preprocess_image`.

    Returns:
        (K, *original_shape) float32 probabilities (outside the crop box: background 1, other classes 0), or
        (*original_shape) label map (background 0 outside the box), aligned with the raw image.
    """
    config = _configuration(plan, configuration)
    is_label = np.issubdtype(prediction.dtype, np.integer) or prediction.dtype == bool
    spacing, original = properties.target_spacing, properties.original_spacing
    orders = dict(new_shape=properties.shape_after_crop, order_z=config.resampling_order_z,
                  separate_z=config.separate_z, anisotropy_threshold=plan.anisotropy_threshold)
    region = tuple(slice(a, b) for a, b in properties.crop_bbox)
    if is_label:
        back = resample_label(prediction, spacing, original, order=config.resampling_order_seg, **orders)
        full = np.zeros(properties.original_shape, dtype=back.dtype)
        full[region] = np.maximum(back, 0)
        return full
    return _uncrop_probabilities(_scores_back_to_crop(prediction, properties, plan, config), properties)


def _scores_back_to_crop(scores: np.ndarray, properties: CaseProperties, plan, config) -> np.ndarray:
    """Float maps ``(K, *S2)`` (logits or probabilities) resampled back onto the crop box's original grid.

    Linearly (the plan's ``resampling_order_probabilities``), the thick axis of anisotropic data by nearest neighbour,
    as nnU-Net resamples its logits.
    """
    return resample_image(scores, properties.target_spacing, properties.original_spacing,
                          new_shape=properties.shape_after_crop,
                          order=getattr(config, "resampling_order_probabilities", 1),
                          order_z=config.resampling_order_z, separate_z=config.separate_z,
                          anisotropy_threshold=plan.anisotropy_threshold)


def _uncrop_probabilities(probabilities: np.ndarray, properties: CaseProperties, *, regions: bool = False) -> np.ndarray:
    """The crop box's probabilities put back into the whole image, background probability 1 around it.

    Region probabilities (one sigmoid per region, no background channel) are 0 around it (nnU-Net's
    ``revert_cropping_on_probabilities``).
    """
    full = np.zeros((probabilities.shape[0], *properties.original_shape), dtype=np.float32)
    if not regions:
        full[0] = 1.0
    full[(slice(None), *(slice(a, b) for a, b in properties.crop_bbox))] = probabilities
    return full


def restore_probabilities(logits: np.ndarray, properties: CaseProperties, plan, configuration) -> np.ndarray:
    """Class probabilities on the original grid from logits on the preprocessed one, as nnU-Net restores them.

    nnU-Net (``convert_predicted_logits_to_segmentation_with_correct_shape``) resamples the *logits* back (linearly,
    the thick axis of anisotropic data by nearest neighbour), applies the softmax, then puts the crop box back into
    the full image with background probability 1 around it. Resampling probabilities instead (what tutorseg did
    before) can move a boundary by a voxel where classes meet.

    Args:
        logits: (K, *S2) float logits on the preprocessed grid.
        properties: the case's :class:`CaseProperties`.
        plan: the :class:`tutorseg.planning.Plan`.
        configuration: a configuration name or its :class:`ConfigurationPlan`.

    Returns:
        (K, *original_shape) float32 probabilities.
    """
    back = _scores_back_to_crop(logits, properties, plan, _configuration(plan, configuration))
    if plan.has_regions:  # one sigmoid per region (regions overlap: no softmax across them)
        np.negative(back, out=back)
        np.exp(back, out=back)
        back += 1
        np.reciprocal(back, out=back)
        return _uncrop_probabilities(back, properties, regions=True)
    back -= back.max(axis=0, keepdims=True)  # the softmax, in place
    np.exp(back, out=back)
    back /= back.sum(axis=0, keepdims=True)
    return _uncrop_probabilities(back, properties)


def restore_segmentation(probabilities: np.ndarray, properties: CaseProperties, plan, configuration) -> np.ndarray:
    """The label map on the original grid from logits (or probabilities) on the preprocessed one, one class at a time.

    The argmax of :func:`restore_probabilities` (the softmax does not change which class is largest) without its
    memory: that holds every class at the original resolution (a CT of 512 x 512 x 500 voxels with 14 classes:
    7 GB in float32). Here one class at a time is resampled back and compared with the best so far, so memory holds
    two full-resolution maps whatever the number of classes. The result is the same label map: the classes are
    resampled independently, and a strict "greater than" keeps the first class on ties, as ``argmax`` does
    (tests/test_large_volumes.py compares them).

    Args:
        probabilities: (K, *S2) logits (as prediction passes them, nnU-Net's order) or class probabilities on the
            preprocessed grid.
        properties: the case's :class:`CaseProperties`.
        plan: the :class:`tutorseg.planning.Plan`.
        configuration: a configuration name or its :class:`ConfigurationPlan`.

    Returns:
        (*original_shape) uint8 (int16 beyond 255 classes) class indices 0..K-1, 0 outside the crop box.
    """
    config = _configuration(plan, configuration)
    best_value = best_index = None
    index_type = np.uint8 if probabilities.shape[0] <= 256 else np.int16
    for k in range(probabilities.shape[0]):
        back = _scores_back_to_crop(probabilities[k:k + 1], properties, plan, config)[0]
        if best_value is None or best_index is None:
            best_value, best_index = back, np.zeros(back.shape, dtype=index_type)
            continue
        better = back > best_value
        best_index[better] = k
        np.maximum(best_value, back, out=best_value)
        del back, better
    assert best_index is not None
    full = np.zeros(properties.original_shape, dtype=index_type)
    full[tuple(slice(a, b) for a, b in properties.crop_bbox)] = best_index
    return full


def restore_label_map(logits: np.ndarray, properties: CaseProperties, plan, configuration) -> np.ndarray:
    """The label map of the plan's label values on the original grid, from logits on the preprocessed one.

    Classes: the values of :func:`restore_segmentation`'s indices. Region-based labels: one region at a time, a
    region where its resampled logit is above 0 (its sigmoid above 0.5), its voxels given the region's value of
    ``regions_class_order``, region after region (as :meth:`~tutorseg.planning.Plan.to_label_map`).
    """
    config = _configuration(plan, configuration)
    if not plan.has_regions:
        values = np.array(sorted(plan.class_labels.values()))
        return values[restore_segmentation(logits, properties, plan, config)].astype(
            np.uint8 if values.max() < 256 else np.int16)
    label_map = np.zeros(properties.original_shape, dtype=np.uint8 if max(plan.regions_class_order) < 256
                         else np.int16)
    inside = label_map[tuple(slice(a, b) for a, b in properties.crop_bbox)]
    for k, value in enumerate(plan.regions_class_order):
        back = _scores_back_to_crop(logits[k:k + 1], properties, plan, config)[0]
        inside[back > 0] = value
    return label_map


# --------------------------------------------------------------------------------------------------- the folder


def _settings(plan, config) -> dict:
    """The parts of the plan that change the preprocessed arrays (a changed batch size does not redo anything)."""
    return {
        "format_version": FORMAT_VERSION,
        "configuration": config.name,
        "spacing": list(config.spacing),
        "slice_axis": getattr(config, "slice_axis", None),
        "normalization_schemes": list(config.normalization_schemes),
        "use_mask_for_norm": list(config.use_mask_for_norm),
        "resampling_order_data": config.resampling_order_data,
        "resampling_order_seg": config.resampling_order_seg,
        "resampling_order_z": config.resampling_order_z,
        "separate_z": config.separate_z,
        "anisotropy_threshold": plan.anisotropy_threshold,
        "labels": {str(k): int(v) for k, v in plan.labels.items()},
        "intensity_properties": {str(k): v for k, v in plan.foreground_intensity_properties_per_channel.items()}
        if "CTNormalization" in config.normalization_schemes else {},
    }


def _settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def case_signature(case: Case) -> list:
    """``[[file name, size, mtime_ns], ...]`` of a case's files: changes when a file is replaced or edited."""
    files = [*case.image_files, *([case.label_file] if case.label_file else [])]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def _write_json(path: Path, data) -> None:
    write_json_atomic(path, data, indent=1)


def case_record_path(folder: Path, case_id: str) -> Path:
    """``CASE.json``: the case's properties, signature and settings hash, written when the case is finished."""
    return folder / f"{case_id}.json"


def _finished_case(folder: Path, case_id: str, digest: str, signature: list) -> dict | None:
    """The properties of a case finished with these settings and these files, else None."""
    path = case_record_path(folder, case_id)
    if not path.is_file() or not storage.is_complete(folder, case_id):
        return None
    try:
        record = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    same = record.get("settings_hash") == digest and record.get("signature") == signature
    return record["properties"] if same else None


def _process_case(job: tuple[Case, Plan, ConfigurationPlan, Path, str]) -> dict:
    """Worker: preprocess one case, store its arrays, then its CASE.json; returns its properties as a dict."""
    case, plan, config, folder, digest = job
    try:
        geometry = case.geometry()
        label = case.load_label()
        data, out_label, props = preprocess_image(case.load_image(), geometry.spacing, plan, config, label,
                                                  case_id=case.case_id, affine=geometry.affine)
    except TutorsegError as exc:
        raise PreprocessingError(f"case {case.case_id}: {exc}") from None
    assert out_label is not None  # only labelled cases are preprocessed for training
    locations = sample_class_locations(out_label, plan.sampling_targets, ignore=plan.ignore_label)
    storage.write_case(folder, case.case_id, data, out_label, locations, patch_size=config.patch_size,
                       slice_axis=getattr(config, "slice_axis", None))
    properties = props.to_dict()
    _write_json(case_record_path(folder, case.case_id),
                {"settings_hash": digest, "signature": case_signature(case), "properties": properties})
    return properties


def preprocessing_workers(cases: Sequence[Case], plan, config, requested: int | None) -> tuple[int, str]:
    """Worker processes: the cores there are (at most 8), fewer when the largest case would not fit that often.

    A worker holds one case at a time; its peak is about 10x the case's float32 image at the larger of its original
    and its target grid (the image, its cropped and normalised copy, the resampled one and the label maps;
    measured in ``bench/storage.md``). Workers are limited so that they fit in 70 % of the memory available.

    Returns:
        (workers, a sentence saying why, or "" when memory does not limit them).
    """
    from tutorseg.data.jobs import available_memory_bytes

    workers = default_workers() if requested is None else int(requested)
    if requested is not None or not cases:
        return workers, ""
    largest = 0
    for case in cases:
        geometry = case.geometry()
        target = compute_new_shape(geometry.shape, geometry.spacing, _target_spacing(config, geometry.spacing))
        voxels = max(int(np.prod(geometry.shape)), int(np.prod(target)))
        largest = max(largest, PREPROCESSING_PEAK_FACTOR * 4 * voxels * len(case.image_files))
    available = available_memory_bytes()
    if available is None or largest * workers <= 0.7 * available:
        return workers, ""
    fitting = max(1, int(0.7 * available // largest))
    if fitting >= workers:
        return workers, ""
    return fitting, (f"{fitting} worker(s) instead of {workers}: the largest case needs about "
                     f"{largest / 1e9:.1f} GB while it is processed and {available / 1e9:.1f} GB are available")


def _target_spacing(config, spacing: Sequence[float]) -> Sequence[float]:
    """The spacing :func:`preprocess_image` resamples this case to (for sizing memory only)."""
    target = config.target_spacing_for_case(spacing) if hasattr(config, "target_spacing_for_case") \
        else tuple(config.spacing)
    return target if len(target) == len(spacing) else spacing


def _run(cases: list[Case], plan, config, folder: Path, digest: str, num_workers: int,
         progress: bool) -> dict[str, dict]:
    """Preprocess the cases in processes ("spawn": a fresh interpreter, safe beside torch's threads)."""
    results = run_per_case(_process_case, [(c, plan, config, folder, digest) for c in cases],
                           num_workers=num_workers, workers="processes", start_method="spawn", progress=progress,
                           description=f"preprocessing {config.name}")
    return {case.case_id: properties for case, properties in zip(cases, results)}


def preprocess(dataset: Dataset | str | os.PathLike, plan, configuration: str, out_dir: str | os.PathLike, *,
               num_workers: int | None = None, progress: bool = True, verbose: bool = True) -> PreprocessedDataset:
    """Preprocess a dataset's labelled cases for one configuration, into ``out_dir/<configuration>/``.

    Idempotent and resumable: each case's ``CASE.json``, written when the case is finished, records a hash of the
    plan's preprocessing settings and the case's file sizes and modification times. A second call with the same
    inputs does nothing (and says so); a changed plan redoes every case; changed, new or removed cases are redone
    or removed alone; a call that was killed (a Colab disconnect) continues with the cases it had not finished.
    One case per worker process at a time: memory holds at most one case per worker.

    Args:
        dataset: a :class:`tutorseg.data.dataset.Dataset` or its folder.
        plan: the :class:`tutorseg.planning.Plan`.
        configuration: ``"3d_fullres"``, ``"2d"``... (a name in ``plan.configurations``).
        out_dir: where to write (e.g. a folder on Google Drive in Colab).
        num_workers: processes; default: the CPU count (at most 8), fewer when the largest case would not fit in
            memory that many times (:func:`preprocessing_workers`). 0 or 1 runs in this process.
        progress: show a progress bar.
        verbose: print one line saying what was done.

    Returns:
        The :class:`PreprocessedDataset` (``processed`` lists the cases processed by this call).

    Raises:
        PreprocessingError: the plan does not fit the dataset, or a case cannot be processed (the case is named).
    """
    start = time.perf_counter()
    dataset = as_dataset(dataset)
    config = _configuration(plan, configuration)
    cases = [c for c in dataset.training if c.has_label]
    if not cases:
        raise PreprocessingError(f"{dataset.name} has no labelled cases to preprocess (labelsTr/ is empty)")
    folder = Path(out_dir).expanduser() / config.name
    folder.mkdir(parents=True, exist_ok=True)
    settings = _settings(plan, config)
    digest = _settings_hash(settings)
    signatures = {c.case_id: case_signature(c) for c in cases}
    record_path, props_path = folder / "preprocessed.json", folder / "properties.json"
    previous = json.loads(record_path.read_text("utf-8")) if record_path.is_file() else {}
    finished = {c.case_id: _finished_case(folder, c.case_id, digest, signatures[c.case_id]) for c in cases}
    todo = [c for c in cases if finished[c.case_id] is None]
    removed = sorted({p.stem for p in folder.glob("*.json")} - set(signatures) - {"preprocessed", "properties"})
    if not todo and not removed and previous.get("settings_hash") == digest and props_path.is_file():
        result = PreprocessedDataset.open(folder)
        if verbose:
            print(f"{folder.name}: already preprocessed ({len(cases)} cases, same plan settings and files); "
                  "nothing to do")
        return PreprocessedDataset(folder, config.name, result.case_ids, result.properties, (),
                                   time.perf_counter() - start)
    for old_file in folder.glob("*.npz"):  # tutorseg's first format (one .npz per case), left by an older version
        if not old_file.name.endswith(storage.LOCATIONS_ENDING):
            old_file.unlink()
    workers, why_fewer = preprocessing_workers(todo, plan, config, num_workers)
    if why_fewer and verbose:
        print(f"{folder.name}: {why_fewer}")
    fresh = _run(todo, plan, config, folder, digest, min(workers, len(todo)), progress)
    properties = {k: v for k, v in finished.items() if v is not None}
    properties.update(fresh)
    for case_id in removed:
        storage.remove_case(folder, case_id)
        case_record_path(folder, case_id).unlink(missing_ok=True)
    properties = dict(sorted(properties.items()))
    _write_json(props_path, properties)
    _write_json(record_path, {"tutorseg_format": FORMAT_VERSION, "configuration": config.name, "dataset": dataset.name,
                              "settings_hash": digest, "settings": settings, "cases": signatures})
    seconds = time.perf_counter() - start
    if verbose:
        resumed = len(cases) - len(todo)
        if resumed and previous.get("settings_hash") != digest:
            why = f"continued where a stopped run left off: {resumed} were done"
        elif not previous:
            why = "new folder"
        elif previous.get("settings_hash") != digest:
            why = "plan settings changed"
        else:
            why = "cases changed"
        print(f"{folder.name}: preprocessed {len(todo)} of {len(cases)} cases ({why}"
              + (f", removed {len(removed)}" if removed else "") + f") in {seconds:.1f} s")
    return PreprocessedDataset(folder, config.name, tuple(properties),
                               {k: CaseProperties.from_dict(v) for k, v in properties.items()},
                               tuple(c.case_id for c in todo), seconds)
