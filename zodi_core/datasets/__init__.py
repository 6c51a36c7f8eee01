"""Datasets: ``synth`` (street scenes with exact labels), ``readers`` (pair Cityscapes, ACDC and
GTA5 files by id), ``ingest`` (check and write a ``samples`` manifest), ``io`` (decode by URI).
"""
