"""Data manifests shipped with tutorseg: one JSON file per dataset and the JSON schema they follow.

This folder is package data (installed as ``tutorseg.data_manifests``); :mod:`tutorseg.integrations.manifests` reads it.
"""
