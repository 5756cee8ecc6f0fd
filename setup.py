"""Installs the packages under one name, ``mxcnn``, so that the generic folder names
``common``, ``symbols``, ``graph``, ``data`` and ``train`` never shadow a user's own modules in site-packages.

From a checkout they are used as they are (``python train/train_cifar.py``); installed,
they are ``mxcnn.<package>`` plus the console scripts below.
"""
import os
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import mxnet_build  # noqa: E402  (standard library only)

PACKAGES = {"mxcnn.common": "common", "mxcnn.symbols": "symbols", "mxcnn.graph": "graph",
            "mxcnn.graph.inspector": "graph/inspector", "mxcnn.data": "data", "mxcnn.train": "train",
            "mxcnn.inference": "inference", "mxcnn.distributed": "distributed"}


def requirements():
    with open(os.path.join(HERE, "requirements.txt")) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


setup(
    name="mxcnn",
    version="0.1.0",
    description="MXNet symbol generators, data pipeline and trainer for classic image-classification CNNs",
    long_description=open(os.path.join(HERE, "README.md")).read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.12",
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    include_package_data=True,
    package_data={"mxcnn.graph.inspector": ["assets/*"]},
    install_requires=requirements(),
    # MXNet is an extra, one per build (they share the mxnet/ folder): pip install .[cpu],
    # .[cu117], ...  `make setup` picks it for the machine and removes any other build.
    extras_require=mxnet_build.extras(),
    entry_points={
        "console_scripts": [
            "mxcnn-train=mxcnn.train.train_cifar:main",
            "mxcnn-score=mxcnn.inference.score:main",
            "mxcnn-launch=mxcnn.distributed.launch:main",
            "mxcnn-plot-curves=mxcnn.train.plot_curves:main",
            "mxcnn-export-onnx=mxcnn.inference.export_onnx:main",
            "mxcnn-convert=mxcnn.inference.convert:main",
            "mxcnn-quantize=mxcnn.inference.quantize:main",
            "mxcnn-prepare-cifar=mxcnn.data.prepare_cifar:main",
            "mxcnn-im2rec=mxcnn.data.im2rec:main",
            "mxcnn-inspect=mxcnn.graph.inspector:main",
        ]
    },
    classifiers=["Programming Language :: Python :: 3",
                 "Topic :: Scientific/Engineering :: Artificial Intelligence"],
)
