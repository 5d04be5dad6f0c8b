"""Data manifests shipped with tutorseg: one JSON file per dataset and the JSON schema they follow.

This folder is package data (installed as ``tutorseg.data_manifests``); :mod:`tutorseg.manifests` reads it.
"""
