"""recbole-mkg: multimodal knowledge-graph recommendation for RecBole.

RecBole 1.2.1 itself is deliberately *not* in ``install_requires``: its metadata pins ``ray<=2.6.3``
(no Python 3.12 wheels, needs numpy<2), ``colorlog==4.7.2`` and ``colorama==0.4.4``. Install it with
``pip install --no-deps recbole==1.2.1`` (``scripts/setup_env.sh`` does it); ``recbole_mkg`` checks at
import time that it is there and says how to install it if not.
"""
from setuptools import find_packages, setup


def _requirements():
    with open("requirements.txt", encoding="utf-8") as f:
        return [
            line.strip()
            for line in f
            if line.strip() and not line.startswith("#") and not line.startswith("pytest")
        ]


setup(
    name="recbole-mkg",
    version="0.1.0",
    description="Multimodal knowledge-graph recommendation (Multi-KG4Rec, CrossGMMI-DUKGLR) as a RecBole plugin",
    packages=find_packages(include=["recbole_mkg", "recbole_mkg.*", "dataset_tools", "dataset_tools.*"]),
    package_data={"recbole_mkg": ["properties/*.yaml", "properties/*/*.yaml"]},
    python_requires=">=3.10",
    install_requires=["torch>=2.0"] + _requirements(),
    extras_require={"test": ["pytest>=7.0"]},
)
