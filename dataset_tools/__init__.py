"""dataset_tools: build RecBole multimodal-KG datasets from raw data and extract their feature files.

Run ``python -m dataset_tools --help``. Sub-commands: ``build-movielens``, ``build-amazon-books``,
``extract-features``, ``check`` (see docs/dataset_tools.md). No model code is imported here; the feature-file
format comes from :mod:`recbole_mkg.data.features`.
"""
from dataset_tools.atomic import DatasetToolError  # noqa: F401

__all__ = ["DatasetToolError", "main"]


def main(argv=None):
    from dataset_tools.__main__ import main as _main

    return _main(argv)
