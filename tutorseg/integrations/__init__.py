"""The edges: getting data in and results out, and the machine tutorseg runs on. No pipeline step imports these.

- ``downloads`` (with ``gdrive``, ``transfers``, ``archives``): :func:`download` a dataset described by a manifest,
  verified by checksum; ``manifests``: the registry of datasets and :func:`create_manifest` for instructors.
- ``convert``: a folder of images and a folder of masks into a dataset in nnU-Net's layout.
- ``export``: a dataset and a plan handed over to nnU-Net itself.
- ``environment``: what machine this is (Colab, GPU, packages), printed at the top of every notebook.
"""

from tutorseg.data.lazy import lazy_exports

_EXPORTS = {
    "download": "downloads", "create_manifest": "manifests", "convert_folders": "convert",
    "export_nnunet": "export", "describe_environment": "environment",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
